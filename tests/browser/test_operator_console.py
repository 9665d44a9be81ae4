"""The operator's console in a real browser: moves as jobs that update themselves, a suspend
that asks for its reason, an archive that asks first, the tenant list's placement and revision
columns, import jobs in words with their error report downloadable, and an onboarding that says
no worker consumes its queue. Real server, real Celery worker, Debian's Chromium."""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from playwright.sync_api import Page, expect, sync_playwright

from control_plane.imports.models import ImportJob
from control_plane.tenancy.models import TenantMove
from tenants.models import Isolation, Tenant
from tenants.provisioning import drop_storage
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, Credentials, WebServer
from tests.conftest import WorkerProcess, nobody_else_consumes
from tests.factories import make_tenant
from tests.imports.conftest import csv_bytes
from tests.taskflow.conftest import TenantFixture, discard, new_key, provisioned_tenant

pytestmark = [pytest.mark.browser, pytest.mark.worker]


@dataclass
class Pooled:
    fixture: TenantFixture
    project_key: str

    @property
    def tenant(self) -> Tenant:
        return self.fixture.tenant


@pytest.fixture
def pooled(django_db_blocker: Any) -> Iterator[Pooled]:
    """An rls tenant with a project and two tasks; dropped afterwards wherever it moved to."""
    with django_db_blocker.unblock():
        fixture = provisioned_tenant(Isolation.RLS)
        api = fixture.api("admin")
        key = new_key()
        project = api.post("/api/v1/projects", {"key": key, "name": "Console"}).json()
        for i in range(2):
            api.post("/api/v1/tasks", {"project_id": project["id"], "title": f"t{i}"})
    yield Pooled(fixture, key)
    with django_db_blocker.unblock():
        discard(fixture)


@pytest.fixture
def cleanup(django_db_blocker: Any) -> Iterator[list[str]]:
    """Slugs of tenants a test makes through the browser, removed afterwards."""
    slugs: list[str] = []
    yield slugs
    with django_db_blocker.unblock():
        deadline = time.monotonic() + 30  # let a provisioning in flight finish before dropping
        while (
            Tenant.objects.filter(slug__in=slugs, status="provisioning").exists()
            and time.monotonic() < deadline
        ):
            time.sleep(0.2)
        for tenant in Tenant.objects.filter(slug__in=slugs):
            drop_storage(tenant)
            tenant.delete()
        User.objects.filter(username__in=[f"owner-{s}@example.com" for s in slugs]).delete()


def sign_in(page: Page, server: WebServer, account: Credentials) -> None:
    page.goto(f"{server.url}/admin/")
    page.fill("#id_username", account.username)
    page.fill("#id_password", account.password)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_contain_text("TaskFlow control plane")


def tick_and_run(page: Page, slug: str, action: str) -> None:
    row = page.locator("#result_list tbody tr", has_text=slug)
    row.locator("input.action-select").check()
    page.select_option("select[name=action]", action)
    page.click("button[name=index]")


def test_operator_moves_suspends_and_archives_tenants_and_sees_each_job(
    web_server: WebServer,
    celery_worker_process: WorkerProcess,
    operator_account: Credentials,
    pooled: Pooled,
    django_db_blocker: Any,
    cleanup: list[str],
    unique: str,
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    slug = pooled.tenant.slug
    cleanup.append(f"arch{unique}")
    with django_db_blocker.unblock():
        connection.set_schema_to_public()  # type: ignore[attr-defined]
        # A row without storage, in rls mode so that no fan-out of a later test visits it.
        spare = make_tenant(f"arch{unique}", isolation=Isolation.RLS)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        sign_in(page, web_server, operator_account)

        page.goto(f"{web_server.url}/admin/tenants/tenant/")
        public = page.locator("#result_list tbody tr", has_text="(control plane)")
        expect(public.locator("input.action-select")).to_have_count(0)
        page.goto(f"{web_server.url}/admin/tenants/tenant/?q={slug}")
        row = page.locator("#result_list tbody tr", has_text=slug)
        expect(row.locator("td.field-placement")).to_have_text("shared")
        expect(row.locator("td.field-revision")).not_to_have_text("-")
        page.screenshot(path=str(SCREENSHOTS / "console-tenant-list.png"), full_page=True)

        # A move is a job: queued, then done, on a list that refreshes itself.
        tick_and_run(page, slug, "move_to_schema")
        message = page.locator("ul.messagelist li.success")
        expect(message).to_contain_text(f"{slug} (move ")
        message.locator("a", has_text="Follow them").click()
        move_row = page.locator("#result_list tbody tr", has_text=slug).first
        expect(move_row.locator(".move-status")).to_have_text("done", timeout=60_000)
        expect(move_row.locator("td.field-rows_display")).not_to_have_text("-")
        page.screenshot(path=str(SCREENSHOTS / "console-moves-list.png"), full_page=True)

        # The tenant's page: its own schema now, its moves and its usage.
        page.goto(f"{web_server.url}/admin/tenants/tenant/{pooled.tenant.pk}/change/")
        expect(page.locator("div.field-placement div.readonly")).to_have_text(f"t_{slug}")
        expect(page.locator("#tenant-moves .move-status").first).to_have_text("done")
        expect(page.locator("#tenant-usage-rows")).not_to_have_text("0")
        page.screenshot(path=str(SCREENSHOTS / "console-tenant-page.png"), full_page=True)

        # A refused move (archived tenant) is recorded failed with the reason.
        page.goto(f"{web_server.url}/admin/tenants/tenant/?q={spare.slug}")
        tick_and_run(page, spare.slug, "archive")
        expect(page.locator("h1")).to_have_text("Archive tenants")
        page.screenshot(path=str(SCREENSHOTS / "console-archive-confirm.png"), full_page=True)
        page.fill("#id_status_reason", "contract ended")
        page.click("#confirm-status-submit")
        expect(page.locator("ul.messagelist li.success")).to_contain_text("1 archived")
        tick_and_run(page, spare.slug, "move_to_schema")
        expect(page.locator("ul.messagelist li.error")).to_contain_text(
            f"Tenant '{spare.slug}' is archived; only provisioned tenants move."
        )

        # Suspend asks for the reason, records it and shows it with the status.
        page.goto(f"{web_server.url}/admin/tenants/tenant/?q={slug}")
        tick_and_run(page, slug, "suspend")
        expect(page.locator("#id_status_reason")).to_be_visible()
        page.fill("#id_status_reason", "unpaid invoice 2026-11")
        page.screenshot(path=str(SCREENSHOTS / "console-suspend-reason.png"), full_page=True)
        page.click("#confirm-status-submit")
        row = page.locator("#result_list tbody tr", has_text=slug)
        expect(row.locator("td.field-status")).to_have_text("Suspended")
        expect(row.locator("td.field-status_reason")).to_have_text("unpaid invoice 2026-11")
        browser.close()

    with django_db_blocker.unblock():
        moves = list(TenantMove.objects.filter(tenant__in=[pooled.tenant, spare]).order_by("id"))
        assert [(m.target, m.status) for m in moves] == [("schema", "done"), ("schema", "failed")]
        assert moves[0].requested_by is not None
        assert moves[0].requested_by.username == operator_account.username


def test_an_import_with_skipped_rows_reads_in_words_and_its_report_downloads(
    web_server: WebServer,
    celery_worker_process: WorkerProcess,
    operator_account: Credentials,
    pooled: Pooled,
    django_db_blocker: Any,
) -> None:
    key = pooled.project_key
    rows = [(f"E-{i}", key, f"task {i}", "", "todo", "1", "", "") for i in range(1500)]
    rows.append(("E-bad", "NOPE", "no such project", "keep me", "", "", "", ""))
    with django_db_blocker.unblock():
        client = pooled.fixture.client("member")
        response = client.post(
            "/api/v1/imports?mode=skip_invalid", csv_bytes(rows), content_type="text/csv"
        )
        assert response.status_code == 202, response.content
        job_id = response.json()["id"]
        deadline = time.monotonic() + 60
        while not ImportJob.objects.get(pk=job_id).is_finished and time.monotonic() < deadline:
            time.sleep(0.2)
        assert ImportJob.objects.get(pk=job_id).status == "succeeded"
    slug = pooled.tenant.slug
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
        sign_in(page, web_server, operator_account)
        page.goto(f"{web_server.url}/admin/imports/importjob/?q={slug}")
        row = page.locator("#result_list tbody tr").first
        expect(row.locator("td.field-rows")).to_have_text("1,501")
        expect(row.locator("td.field-inserted_display")).to_have_text("1,500")
        page.screenshot(path=str(SCREENSHOTS / "console-import-list.png"), full_page=True)

        page.goto(f"{web_server.url}/admin/imports/importjob/{job_id}/change/")
        expect(page.locator("h1")).to_have_text(f"Import {job_id} into {slug}")
        expect(page.locator("div.field-outcome div.readonly")).to_have_text(
            "1 row skipped (see the error report)"
        )
        page.screenshot(path=str(SCREENSHOTS / "console-import-page.png"), full_page=True)
        with page.expect_download() as download:
            page.click("#import-error-report")
        report = download.value.path().read_text()
        browser.close()
    lines = list(csv.reader(io.StringIO(report)))
    assert lines[0][:3] == ["line", "column", "reason"]
    assert lines[1] == [
        "1502", "project", "no live project has this key",
        "E-bad", "NOPE", "no such project", "keep me", "", "", "", "",
    ]  # fmt: skip


def test_an_onboarding_without_a_worker_says_so_and_how_long_it_waited(
    web_server: WebServer,
    celery_worker_process: WorkerProcess,
    operator_account: Credentials,
    cleanup: list[str],
    unique: str,
) -> None:
    slug = f"wait{unique}"
    cleanup.append(slug)
    with nobody_else_consumes("default"), sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        sign_in(page, web_server, operator_account)
        page.goto(f"{web_server.url}/admin/tenants/tenant/add/")
        page.fill("#id_name", f"Waiting {slug}")
        page.fill("#id_slug", slug)
        page.fill("#id_domain", f"{slug}.localhost")
        page.fill("#id_owner_email", f"owner-{slug}@example.com")
        page.click("input[name=_save]")
        expect(page.locator("#tenant-status")).to_have_text("provisioning")
        expect(page.locator("#tenant-waiting")).to_contain_text(
            "no worker consumes the default queue", timeout=30_000
        )
        expect(page.locator("#tenant-waiting")).to_have_text(re.compile(r"^[1-9]\d*s; "))
        page.screenshot(path=str(SCREENSHOTS / "console-onboarding-no-worker.png"), full_page=True)
        browser.close()

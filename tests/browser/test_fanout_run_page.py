"""An operator starts a migration run from the tenant list and watches run pages update by
themselves, with a real browser, web server and Celery worker."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from control_plane.fanout import runs
from control_plane.fanout.models import MigrationRun, RunStatus
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, Credentials, WebServer
from tests.conftest import WorkerProcess
from tests.fanout.support import wait_for_run
from tests.migrations_sqla.support import (
    BASE_REVISION,
    TEST_REVISION,
    drop_tenants,
    make_script_dir,
    make_tenants,
    set_template,
)

pytestmark = [pytest.mark.browser, pytest.mark.worker]

TENANTS = 80


@pytest.fixture
def slow_scripts(tmp_path: Path) -> str:
    """TEST_REVISION taking 40 ms a schema, so the run lasts long enough to be watched."""
    return make_script_dir(tmp_path / "scripts", sleep_ms=40)


@pytest.fixture
def prefix(django_db_blocker: Any, unique: str, slow_scripts: str) -> Iterator[str]:
    prefix = f"w{unique[:8]}"
    with django_db_blocker.unblock():
        set_template(slow_scripts, BASE_REVISION)
        make_tenants(prefix, TENANTS)
    yield prefix
    with django_db_blocker.unblock():
        drop_tenants(prefix)
        set_template(slow_scripts, BASE_REVISION)


def sign_in(page: Page, server: WebServer, account: Credentials) -> None:
    page.goto(f"{server.url}/admin/")
    page.fill("#id_username", account.username)
    page.fill("#id_password", account.password)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_contain_text("TaskFlow control plane")


def test_operator_starts_a_run_from_the_tenant_list_and_watches_the_run_page(
    web_server: WebServer,
    celery_worker_process: WorkerProcess,
    operator_account: Credentials,
    prefix: str,
    slow_scripts: str,
    django_db_blocker: Any,
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The ORM stays outside the Playwright blocks: its sync API runs an event loop here.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        sign_in(page, web_server, operator_account)
        page.goto(f"{web_server.url}/admin/tenants/tenant/?q={prefix}")
        expect(page.locator("#result_list tbody tr")).to_have_count(TENANTS)
        page.check("#action-toggle")
        page.select_option("select[name=action]", "migrate_selected_tenants")
        page.click("button[name=index]")
        # The run form: target revision and strategy, the selection carried along.
        expect(page.locator("#start-run-form")).to_be_visible()
        expect(page.locator("#id_to")).to_have_value("head")
        page.fill("#id_concurrency", "3")
        page.fill("#id_max_failures", "10%")
        page.screenshot(path=str(SCREENSHOTS / "fanout-start-run-form.png"), full_page=True)
        page.click("#start-run-submit")
        expect(page.locator("ul.messagelist li.success")).to_contain_text(
            f"started for {TENANTS} tenants"
        )
        # Already at the head of migrations_sqla: every tenant is skipped from its records.
        expect(page.locator("#run-status")).to_have_text("succeeded", timeout=30_000)
        expect(page.locator("#run-count-skipped")).to_have_text(str(TENANTS))
        expect(page.locator("#run-progress-text")).to_have_text("100.0%")
        action_run_url = page.url
        browser.close()

    match = re.search(r"/migrationrun/(\d+)/change/", action_run_url)
    assert match, action_run_url
    with django_db_blocker.unblock():
        action_run = MigrationRun.objects.get(pk=int(match.group(1)))
        assert action_run.tenant_slugs is not None
        assert len(action_run.tenant_slugs) == TENANTS
        assert action_run.created_by is not None
        assert action_run.created_by.username == operator_account.username
        assert (action_run.concurrency, action_run.max_failure_percent) == (3, 10.0)
        run = runs.start_run(
            tenants=action_run.tenant_slugs,
            canary=2,
            concurrency=1,
            batch_size=5,
            script_location=slow_scripts,
        )

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        sign_in(page, web_server, operator_account)
        page.goto(f"{web_server.url}/admin/fanout/migrationrun/{run.pk}/change/")
        expect(page.locator("#run-status")).to_have_text(re.compile("pending|running"))
        expect(page.locator("#run-cancel")).to_be_visible()
        # It moves by itself: some tenants done, not all, without a reload.
        expect(page.locator("#run-count-succeeded")).not_to_have_text("0", timeout=30_000)
        assert int(page.locator("#run-done").inner_text()) < TENANTS
        page.screenshot(path=str(SCREENSHOTS / "fanout-run-page-running.png"), full_page=True)
        expect(page.locator("#run-status")).to_have_text("succeeded", timeout=60_000)
        # Ended: no Cancel any more, and nothing to resume, without a reload.
        expect(page.locator("#run-cancel")).to_be_hidden()
        expect(page.locator("#run-resume")).to_be_hidden()
        expect(page.locator("#run-progress-text")).to_have_text("100.0%")
        expect(page.locator("#run-progress")).to_have_attribute("aria-valuenow", "100.0")
        expect(page.locator("#run-count-succeeded")).to_have_text(str(TENANTS))
        expect(page.locator("#run-target")).to_have_text(TEST_REVISION)

        page.select_option("#step-status-filter", "failed")
        expect(page.locator("#run-steps tbody tr")).to_have_count(0)
        page.select_option("#step-status-filter", "succeeded")
        tenant_rows = page.locator(
            f"#run-steps tbody tr.run-step--succeeded[data-schema^='t_{prefix}']"
        )
        expect(tenant_rows).to_have_count(TENANTS)  # besides the template (and shared) rows
        page.fill("#step-search", f"t_{prefix}0007")
        expect(page.locator("#run-steps tbody tr")).to_have_count(1)
        expect(page.locator("#run-steps tbody tr td").first).to_have_text(f"t_{prefix}0007")
        page.screenshot(path=str(SCREENSHOTS / "fanout-run-page-done.png"), full_page=True)
        browser.close()

    with django_db_blocker.unblock():
        run = wait_for_run(run.pk)
        assert run.status == RunStatus.SUCCEEDED

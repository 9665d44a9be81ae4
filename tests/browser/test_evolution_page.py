"""An operator runs the due_at evolution's expand and backfill from its admin page in a real
browser (Chromium, a web server and a Celery worker), watching the page update by itself, and
rolls the expand back only once confirmed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from control_plane.evolution import phases
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, Credentials, WebServer
from tests.browser.test_operator_console import sign_in
from tests.conftest import WorkerProcess
from tests.evolution.support import (
    add_tasks,
    make_rls_tenants,
    make_tenants,
    restore_platform,
    set_template,
)

pytestmark = [pytest.mark.browser, pytest.mark.worker]


@pytest.fixture
def evolution_pk(django_db_blocker: Any, unique: str) -> Iterator[int]:
    """Schema and rls tenants with tasks, the platform at the expand's parent, a slow backfill."""
    prefix = f"v{unique[:8]}"
    with django_db_blocker.unblock():
        set_template("", "0005")
        for tenant in [*make_tenants(prefix, 3), *make_rls_tenants(prefix, 2)]:
            add_tasks(tenant, 30)
        phases.get_evolution("tasks_due_at").delete()
        evolution = phases.get_evolution("tasks_due_at")
        phases.set_options(evolution, {"batch_rows": 2, "throttle_ms": 20, "concurrency": 2})
    yield evolution.pk
    with django_db_blocker.unblock():
        restore_platform(prefix)


def act(page: Page, action: str, message: str, *, confirm: bool = False) -> None:
    if confirm:
        page.check("#evolution-confirm")
    page.click(f"button[name=action][value='{action}']")
    # The admin's messages start with a capital letter.
    expect(page.locator("ul.messagelist li").first).to_contain_text(
        re.compile(re.escape(message), re.IGNORECASE)
    )


def test_operator_runs_phases_from_the_evolution_page_that_updates_itself(
    web_server: WebServer,
    celery_worker_process: WorkerProcess,
    operator_account: Credentials,
    evolution_pk: int,
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        sign_in(page, web_server, operator_account)
        page.goto(f"{web_server.url}/admin/evolution/evolution/{evolution_pk}/change/")
        expect(page.locator("#evolution-status")).to_have_text("idle")
        expect(page.locator("#evolution-progress-text")).to_have_text("no phase run yet")
        expect(page.locator("#gate-state")).to_have_text("closed")
        expect(page.locator("#gate-reasons li").first).to_contain_text("the switch is not done")

        # Out of order: refused with the reason, nothing started.
        act(page, "start:backfill", "backfill follows expand")
        expect(page.locator("#evolution-runs tbody tr")).to_have_count(0)

        act(page, "start:expand", "expand started.")
        # The page follows the run by itself (no reload) until the phase is done.
        expect(page.locator("#phase-expand")).to_have_attribute(
            "data-done", "true", timeout=120_000
        )
        expect(page.locator("#evolution-completed")).to_have_text("expand")
        expect(page.locator("#evolution-status")).to_have_text("idle")
        expect(page.locator("#evolution-progress-text")).to_contain_text("apply expand.0")
        expect(page.locator("#evolution-progress-text")).to_contain_text("100%")

        act(page, "start:backfill", "backfill started.")
        expect(page.locator("#phase-backfill .phase-label")).to_have_text("running")
        expect(page.locator("#evolution-status")).to_have_text("running")
        page.screenshot(path=str(SCREENSHOTS / "evolution-backfill-running.png"), full_page=True)
        expect(page.locator("#phase-backfill")).to_have_attribute(
            "data-done", "true", timeout=120_000
        )
        expect(page.locator("#evolution-completed")).to_have_text("backfill")
        expect(page.locator("#evolution-progress-text")).to_contain_text("100 rows")
        expect(page.locator("#evolution-runs tbody tr")).to_have_count(2)

        # Rolling the expand back needs the confirmation box.
        act(page, "rollback:expand", "confirm")
        expect(page.locator("#evolution-completed")).to_have_text("backfill")
        act(page, "rollback:expand", "expand rollback started.", confirm=True)
        expect(page.locator("#evolution-completed")).to_have_text("-", timeout=120_000)
        expect(page.locator("#phase-expand")).to_have_attribute("data-done", "false")
        expect(page.locator("#evolution-runs tbody tr")).to_have_count(3)
        page.screenshot(path=str(SCREENSHOTS / "evolution-rolled-back.png"), full_page=True)
        browser.close()

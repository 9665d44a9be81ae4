"""An operator starts a migration run from the tenant list and watches run pages update by
themselves, and resumes a failed run from its page, with a real browser, web server and Celery
worker."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, Playwright, expect, sync_playwright

from control_plane.fanout import runs
from control_plane.fanout.models import MigrationRun, RunStatus
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, Credentials, WebServer
from tests.conftest import WorkerProcess, nobody_else_consumes
from tests.fanout.support import wait_for_run
from tests.migrations_sqla.support import (
    BASE_REVISION,
    TEST_REVISION,
    break_tenant,
    drop_tenants,
    make_script_dir,
    make_tenants,
    mend_tenant,
    set_template,
)

pytestmark = [pytest.mark.browser, pytest.mark.worker]

TENANTS = 80
FANOUT_QUEUE = "migrations"


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


@contextmanager
def held_until_the_page_is_open() -> Iterator[Callable[[], None]]:
    """No worker takes the fan-out's messages until `release()` (or the block's end): a run
    started in the block stays pending, so its page is seen before it ends however long the
    browser took to start (a few seconds of run against a browser's start and a sign-in is a
    race that a loaded machine loses)."""
    with ExitStack() as hold:
        hold.enter_context(nobody_else_consumes(FANOUT_QUEUE))
        yield hold.close


def record_texts(page: Page, selector: str) -> Callable[[], list[str]]:
    """Every text the element shows from now on (the page's script rewrites it as it polls)."""
    page.evaluate(
        """(selector) => {
            const element = document.querySelector(selector);
            window.__seen = window.__seen || {};
            const seen = (window.__seen[selector] = [element.textContent]);
            new MutationObserver(() => seen.push(element.textContent)).observe(
                element, { childList: true, characterData: true, subtree: true }
            );
        }""",
        selector,
    )
    return lambda: list(page.evaluate("(selector) => window.__seen[selector]", selector))


def signed_in_page(playwright: Playwright, server: WebServer, account: Credentials) -> Page:
    """A page of a new headless Chromium, signed in to the admin (the browser closes with
    the Playwright block)."""
    browser = playwright.chromium.launch(
        executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
    )
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(f"{server.url}/admin/")
    page.fill("#id_username", account.username)
    page.fill("#id_password", account.password)
    page.click("input[type=submit]")
    expect(page.locator("#site-name")).to_contain_text("TaskFlow control plane")
    return page


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
        page = signed_in_page(playwright, web_server, operator_account)
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

    match = re.search(r"/migrationrun/(\d+)/change/", action_run_url)
    assert match, action_run_url
    with django_db_blocker.unblock():
        action_run = MigrationRun.objects.get(pk=int(match.group(1)))
        assert action_run.tenant_slugs is not None
        assert len(action_run.tenant_slugs) == TENANTS
        assert action_run.created_by is not None
        assert action_run.created_by.username == operator_account.username
        assert (action_run.concurrency, action_run.max_failure_percent) == (3, 10.0)

    # The run waits, unconsumed, until its page is open: its length alone (80 x 40 ms) is
    # shorter than launching a browser and signing in on a busy machine, and the page must be
    # seen before the run ends (see held_until_the_page_is_open).
    with held_until_the_page_is_open() as release:
        with django_db_blocker.unblock():
            run = runs.start_run(
                tenants=action_run.tenant_slugs,
                canary=2,
                concurrency=1,
                batch_size=5,
                script_location=slow_scripts,
            )
        with sync_playwright() as playwright:
            page = signed_in_page(playwright, web_server, operator_account)
            page.goto(f"{web_server.url}/admin/fanout/migrationrun/{run.pk}/change/")
            expect(page.locator("#run-status")).to_have_text("pending")
            expect(page.locator("#run-cancel")).to_be_visible()
            expect(page.locator("#run-resume")).to_be_hidden()
            expect(page.locator("#run-done")).to_have_text("0")
            seen_done = record_texts(page, "#run-done")
            release()
            # It moves by itself, through counts between none and all, without a reload.
            expect(page.locator("#run-count-succeeded")).not_to_have_text("0", timeout=30_000)
            page.screenshot(path=str(SCREENSHOTS / "fanout-run-page-running.png"), full_page=True)
            expect(page.locator("#run-status")).to_have_text("succeeded", timeout=60_000)
            assert any(0 < int(done) < TENANTS for done in seen_done() if done.isdigit())
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

    with django_db_blocker.unblock():
        run = wait_for_run(run.pk)
        assert run.status == RunStatus.SUCCEEDED


@pytest.fixture
def few_tenants(django_db_blocker: Any, unique: str, slow_scripts: str) -> Iterator[list[str]]:
    """Six tenants at the base revision; the third cannot take TEST_REVISION (see break_tenant)."""
    prefix = f"r{unique[:8]}"
    with django_db_blocker.unblock():
        set_template(slow_scripts, BASE_REVISION)
        tenants = make_tenants(prefix, 6)
    break_tenant(tenants[2].schema_name)
    yield [t.slug for t in tenants]
    with django_db_blocker.unblock():
        drop_tenants(prefix)
        set_template(slow_scripts, BASE_REVISION)


def test_a_failed_run_offers_resume_live_and_resuming_it_finishes_the_run(
    web_server: WebServer,
    celery_worker_process: WorkerProcess,
    operator_account: Credentials,
    few_tenants: list[str],
    slow_scripts: str,
    django_db_blocker: Any,
) -> None:
    broken = f"t_{few_tenants[2]}"
    with held_until_the_page_is_open() as release:
        with django_db_blocker.unblock():
            run = runs.start_run(
                tenants=few_tenants,
                canary=0,
                concurrency=1,
                batch_size=2,
                max_failures="0",
                script_location=slow_scripts,
            )
        with sync_playwright() as playwright:
            page = signed_in_page(playwright, web_server, operator_account)
            page.goto(f"{web_server.url}/admin/fanout/migrationrun/{run.pk}/change/")
            expect(page.locator("#run-status")).to_have_text("pending")
            expect(page.locator("#run-resume")).to_be_hidden()
            expect(page.locator("#run-cancel")).to_be_visible()
            release()
            # The failure shows up by itself: Resume appears and Cancel goes, without a reload.
            expect(page.locator("#run-status")).to_have_text("failed", timeout=60_000)
            expect(page.locator("#run-resume")).to_be_visible()
            expect(page.locator("#run-cancel")).to_be_hidden()
            expect(page.locator("#run-error")).to_contain_text("Failure budget spent")
            expect(page.locator("#run-count-failed")).to_have_text("1")
            failed_row = page.locator(f"#run-steps tbody tr[data-schema='{broken}']")
            expect(failed_row).to_have_class(re.compile("run-step--failed"))
            expect(failed_row.locator("td.step-error")).to_contain_text("estimate")
            page.screenshot(path=str(SCREENSHOTS / "fanout-run-page-failed.png"), full_page=True)

            # The operator mends the tenant and resumes: the rest runs, and the run succeeds.
            mend_tenant(broken)
            page.click("#run-resume")
            expect(page.locator("ul.messagelist li.success")).to_have_text(f"Run {run.pk} resumed.")
            expect(page.locator("#run-status")).to_have_text("succeeded", timeout=60_000)
            expect(page.locator("#run-resume")).to_be_hidden()
            expect(page.locator("#run-cancel")).to_be_hidden()
            expect(page.locator("#run-count-succeeded")).to_have_text(str(len(few_tenants)))
            expect(page.locator("#run-count-failed")).to_have_text("0")
            page.screenshot(path=str(SCREENSHOTS / "fanout-run-page-resumed.png"), full_page=True)

    with django_db_blocker.unblock():
        run = wait_for_run(run.pk)
        assert run.status == RunStatus.SUCCEEDED, run.error
        assert run.steps.get(schema_name=broken).attempts == 2

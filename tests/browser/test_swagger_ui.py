"""A tenant's developer learns the API from its own Swagger UI: Authorize with a token, then
"Try it out" on a create, a list with sort and cursor, and a PATCH with If-Match, with a real
browser against a real web server."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Locator, Page, expect, sync_playwright

from tests.browser.conftest import (
    CHROMIUM,
    CHROMIUM_ARGS,
    EXPECT_TIMEOUT_MS,
    SCREENSHOTS,
    WebServer,
)
from tests.taskflow.conftest import TenantFixture, discard, new_key, provisioned_tenant

pytestmark = pytest.mark.browser


@pytest.fixture
def tenant(django_db_blocker: Any) -> Iterator[TenantFixture]:
    """A provisioned tenant, committed so the server process serves it."""
    with django_db_blocker.unblock():
        fixture = provisioned_tenant()
    yield fixture
    with django_db_blocker.unblock():
        discard(fixture)


def operation(page: Page, tag: str, operation_id: str) -> Locator:
    """An operation of Swagger UI, opened and switched to "Try it out"."""
    block = page.locator(f"#operations-{tag}-{operation_id}")
    block.locator(".opblock-summary").first.click()
    block.locator("button.try-out__btn").click()
    return block


def execute(block: Locator, status: int) -> dict[str, Any]:
    """Press Execute; the live response's status and its JSON body.

    The previous response of the operation is cleared first: left on the page, one with the
    same status would pass for the new one before the browser had the answer.
    """
    clear = block.locator("button.btn-clear")
    if clear.count():
        clear.click()
    responses = block.locator(".live-responses-table")
    expect(responses).to_have_count(0, timeout=EXPECT_TIMEOUT_MS)
    block.locator("button.execute").click()
    live = responses.locator("tbody .response-col_status").first
    expect(live).to_have_text(str(status), timeout=EXPECT_TIMEOUT_MS)
    code = responses.locator("tbody .response-col_description .highlight-code pre").first
    expect(code).to_be_visible(timeout=EXPECT_TIMEOUT_MS)
    body: dict[str, Any] = json.loads(code.inner_text())
    return body


def body_of(block: Locator, value: dict[str, Any]) -> None:
    block.locator("textarea.body-param__text").fill(json.dumps(value))


def param(block: Locator, name: str) -> Locator:
    return block.locator(f'tr[data-param-name="{name}"]').first


def test_authorize_then_create_list_by_cursor_and_patch_with_if_match(
    web_server: WebServer, tenant: TenantFixture
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    base = f"http://{tenant.host}:{web_server.port}"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(EXPECT_TIMEOUT_MS)  # clicks and fills wait as long
        page.goto(f"{base}/api/v1/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text(
            "TaskFlow API", timeout=EXPECT_TIMEOUT_MS
        )

        page.locator(".auth-wrapper button.authorize").click()
        page.locator(".modal-ux input[type=text], .modal-ux input[type=password]").first.fill(
            tenant.tokens["member"]
        )
        page.locator(".modal-ux .auth-btn-wrapper button.authorize").click()
        page.locator(".modal-ux button.btn-done").click()
        expect(page.locator(".auth-wrapper button.authorize.locked")).to_be_visible(
            timeout=EXPECT_TIMEOUT_MS
        )

        create = operation(page, "projects", "createProject")
        body_of(create, {"key": new_key(), "name": "From Swagger"})
        project = execute(create, 201)
        assert project["name"] == "From Swagger"

        create_task = operation(page, "tasks", "createTask")
        for title in ("first", "second", "third"):
            body_of(create_task, {"project_id": project["id"], "title": title})
            task = execute(create_task, 201)
        assert task["version"] == 1

        listing = operation(page, "tasks", "listTasks")
        param(listing, "sort").locator("input").fill("-created_at")
        param(listing, "limit").locator("input").fill("2")
        param(listing, "project").locator("input").fill(str(project["id"]))
        first_page = execute(listing, 200)
        assert [t["title"] for t in first_page["results"]] == ["third", "second"]
        cursor = parse_qs(urlsplit(first_page["next"]).query)["cursor"][0]
        param(listing, "cursor").locator("input").fill(cursor)
        second_page = execute(listing, 200)
        assert [t["title"] for t in second_page["results"]] == ["first"]
        assert second_page["next"] is None

        update = operation(page, "tasks", "updateTask")
        param(update, "task_id").locator("input").fill(str(task["id"]))
        param(update, "If-Match").locator("input").fill('"1"')
        body_of(update, {"title": "renamed in Swagger UI"})
        patched = execute(update, 200)
        assert patched["title"] == "renamed in Swagger UI"
        assert patched["version"] == 2
        expect(
            update.locator(".live-responses-table tbody .response-col_description")
        ).to_contain_text(re.compile(r'etag: "2"', re.IGNORECASE), timeout=EXPECT_TIMEOUT_MS)
        update.locator(".live-responses-table tbody").scroll_into_view_if_needed()
        page.screenshot(
            path=str(SCREENSHOTS / "swagger-ui-patch-with-if-match.png"), full_page=False
        )

        # A stale If-Match is the documented 412, with the current representation.
        stale = execute(update, 412)
        assert stale["current_version"] == 2
        assert stale["current"]["title"] == "renamed in Swagger UI"
        browser.close()

"""An operator onboards a tenant in the admin with a real browser, server and Celery worker."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from playwright.sync_api import expect, sync_playwright

from control_plane.identity.models import ApiToken
from control_plane.identity.tokens import token_digest
from tenants.models import Tenant, TenantStatus
from tenants.provisioning import drop_storage
from tests.browser.conftest import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS, Credentials, WebServer
from tests.conftest import WorkerProcess

pytestmark = [pytest.mark.browser, pytest.mark.worker]

TOKEN = re.compile(r"tf_[0-9a-f]{10}_[A-Za-z0-9_-]+")


@pytest.fixture
def slug(django_db_blocker: Any, unique: str) -> Iterator[str]:
    """A fresh tenant slug; the tenant, its storage and its owner are removed afterwards."""
    slug = f"b{unique}"
    yield slug
    with django_db_blocker.unblock():
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is not None:
            drop_storage(tenant)
            tenant.delete()
        User.objects.filter(username=f"owner-{slug}@example.com").delete()


def test_operator_onboards_a_tenant_and_watches_it_become_active(
    web_server: WebServer,
    celery_worker_process: WorkerProcess,
    operator_account: Credentials,
    slug: str,
    django_db_blocker: Any,
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    # The ORM stays outside this block: Playwright's sync API runs an event loop in this thread.
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        page.goto(f"{web_server.url}/admin/")
        page.fill("#id_username", operator_account.username)
        page.fill("#id_password", operator_account.password)
        page.click("input[type=submit]")
        expect(page.locator("#site-name")).to_contain_text("TaskFlow control plane")

        page.goto(f"{web_server.url}/admin/tenants/tenant/add/")
        page.fill("#id_name", f"Browser {slug}")
        page.fill("#id_slug", slug)
        page.fill("#id_domain", f"{slug}.localhost")
        page.select_option("#id_isolation", "schema")
        page.fill("#id_owner_email", f"owner-{slug}@example.com")
        page.screenshot(path=str(SCREENSHOTS / "admin-onboarding-form.png"), full_page=True)
        page.click("input[name=_save]")

        message = page.locator("ul.messagelist li.success", has_text="Owner API token")
        expect(message).to_be_visible()
        token_text = page.locator("#new-api-token").inner_text()
        assert TOKEN.fullmatch(token_text), token_text
        expect(page.locator("#tenant-status")).to_have_text("active", timeout=30_000)
        expect(page.locator("#tenant-attempts")).to_have_text("1")
        expect(page.locator("#tenant-domains")).to_have_text(f"{slug}.localhost")
        page.screenshot(path=str(SCREENSHOTS / "admin-onboarding-active.png"), full_page=True)

        page.reload()
        expect(page.locator("#tenant-status")).to_have_text("active")
        assert token_text not in page.content()

        page.goto(f"{web_server.url}/admin/tenants/tenant/?q={slug}")
        expect(page.locator("#result_list tbody tr")).to_have_count(1)
        expect(page.locator("#result_list td.field-status")).to_have_text("Active")
        page.screenshot(path=str(SCREENSHOTS / "admin-tenant-list.png"), full_page=True)
        browser.close()

    with django_db_blocker.unblock():
        tenant = Tenant.objects.get(slug=slug)
        owner_token = ApiToken.objects.get(tenant=tenant, user__email=f"owner-{slug}@example.com")
    assert tenant.status == TenantStatus.ACTIVE
    assert owner_token.digest == token_digest(token_text)

    request = urllib.request.Request(
        f"http://127.0.0.1:{web_server.port}/", headers={"Host": f"{slug}.localhost"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
        assert json.load(response)["status"] == "active"

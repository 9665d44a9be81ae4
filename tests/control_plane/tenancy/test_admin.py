"""Tenants and onboardings in the operators' admin: the onboarding form, the status page and
endpoint, and every action of the tenant list."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from control_plane.fanout.models import MigrationRun
from control_plane.identity.tokens import parse_prefix, token_digest
from control_plane.tenancy.models import Onboarding
from control_plane.tenancy.onboarding import request_onboarding, validate_onboarding
from control_plane.worker import readiness
from tenants.models import Isolation, Tenant, TenantStatus
from tests.conftest import nobody_else_consumes
from tests.control_plane.admin_support import HOST, TOKEN, reverse, run_action, texts
from tests.factories import make_tenant, make_user

pytestmark = pytest.mark.django_db


def onboarding_form(unique: str, **overrides: str) -> dict[str, str]:
    slug = f"a{unique}"
    fields = {
        "name": f"Acme {unique}",
        "slug": slug,
        "domain": f"{slug}.localhost",
        "isolation": "schema",
        "owner_email": f"owner-{unique}@example.com",
    }
    return fields | overrides


def queued(callbacks: list[Callable[[], object]], service: str) -> int:
    """How many on-commit callbacks `service` registered (signals register their own too)."""
    return sum(cb.__qualname__.startswith(f"{service}.") for cb in callbacks)


# --- onboarding form -------------------------------------------------------------------------


def test_the_add_page_is_the_onboarding_form(operator: Client) -> None:
    response = operator.get(reverse("admin:tenants_tenant_add"), HTTP_HOST=HOST)
    assert response.status_code == 200
    fields = set(response.context["adminform"].form.fields)
    assert fields == {"name", "slug", "domain", "isolation", "owner_email"}


def test_invalid_onboarding_shows_field_errors_and_creates_nothing(
    operator: Client, unique: str
) -> None:
    tenants, onboardings = Tenant.objects.count(), Onboarding.objects.count()
    data = onboarding_form(unique, slug="Bad-Slug", domain="not a host", owner_email="nobody")
    response = operator.post(reverse("admin:tenants_tenant_add"), data, HTTP_HOST=HOST)
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert set(errors) == {"slug", "domain", "owner_email"}
    assert "Slug must start with a lowercase letter" in errors["slug"][0]
    assert errors["domain"] == ["'not a host' is not a valid host name."]
    assert (Tenant.objects.count(), Onboarding.objects.count()) == (tenants, onboardings)


def test_a_missing_field_is_reported_once(operator: Client, unique: str) -> None:
    data = onboarding_form(unique, name="")
    response = operator.post(reverse("admin:tenants_tenant_add"), data, HTTP_HOST=HOST)
    assert response.context["adminform"].form.errors == {"name": ["This field is required."]}


def test_a_taken_slug_and_domain_are_field_errors(operator: Client, unique: str) -> None:
    make_tenant(f"a{unique}")
    tenants = Tenant.objects.count()
    response = operator.post(
        reverse("admin:tenants_tenant_add"), onboarding_form(unique), HTTP_HOST=HOST
    )
    errors = response.context["adminform"].form.errors
    assert errors["slug"] == [f"A tenant with slug 'a{unique}' already exists."]
    assert errors["domain"] == [f"Domain 'a{unique}.localhost' is already taken."]
    assert Tenant.objects.count() == tenants


def test_valid_onboarding_creates_a_provisioning_tenant_and_shows_the_token_once(
    operator: Client, unique: str, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = operator.post(
            reverse("admin:tenants_tenant_add"),
            onboarding_form(unique, domain=f"A{unique}.LocalHost"),
            HTTP_HOST=HOST,
            follow=True,
        )
    tenant = Tenant.objects.select_related("onboarding").get(slug=f"a{unique}")
    assert response.redirect_chain == [
        (reverse("admin:tenants_tenant_change", args=[tenant.pk]), 302)
    ]
    assert tenant.status == TenantStatus.PROVISIONING
    assert tenant.onboarding.domain == f"a{unique}.localhost"
    assert tenant.onboarding.requested_by == response.wsgi_request.user
    assert queued(callbacks, "request_onboarding") == 1  # provisioning, once the request commits

    match = TOKEN.search(response.content.decode())
    assert match is not None
    token = match.group(1)
    assert parse_prefix(token) == tenant.onboarding.token_prefix
    assert token_digest(token) == tenant.onboarding.token_digest
    assert re.search(r'id="tenant-status"[^>]*>provisioning<', response.content.decode())

    again = operator.get(reverse("admin:tenants_tenant_change", args=[tenant.pk]), HTTP_HOST=HOST)
    assert token not in again.content.decode()
    assert tenant.onboarding.token_digest not in again.content.decode()


def test_losing_a_race_for_the_slug_is_an_error_message_not_a_crash(
    operator: Client, unique: str
) -> None:
    # Validation passes (slug and domain are free) but the insert collides on the schema name,
    # as it would when a concurrent request wins between validation and insert.
    Tenant.objects.create(name="Squatter", slug=f"o{unique}", schema_name=f"t_a{unique}")
    tenants = Tenant.objects.count()
    add_url = reverse("admin:tenants_tenant_add")
    response = operator.post(add_url, onboarding_form(unique), HTTP_HOST=HOST, follow=True)
    assert response.redirect_chain == [(add_url, 302)]
    assert texts(response) == ["A tenant with this slug or domain was just created."]
    assert Tenant.objects.count() == tenants
    assert not Onboarding.objects.filter(domain=f"a{unique}.localhost").exists()


def test_the_change_page_edits_only_the_name_api_version_plan_and_rate_limits(
    operator: Client, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from taskflow import api_versions
    from tests.taskflow.test_api_versions import OLD, catalog_with_an_older_version

    monkeypatch.setattr(api_versions, "CATALOG", catalog_with_an_older_version())
    tenant = make_tenant(f"c{unique}")
    url = reverse("admin:tenants_tenant_change", args=[tenant.pk])
    page = operator.get(url, HTTP_HOST=HOST).content.decode()
    assert f'<option value="{OLD}">{OLD} (deprecated)</option>' in page
    response = operator.post(
        url,
        {
            "name": "Renamed", "slug": "hijack", "isolation": "rls", "api_version": OLD,
            "plan": "enterprise", "rate_limits": '{"reads": 99}',
        },
        HTTP_HOST=HOST,
    )  # fmt: skip
    assert response.status_code == 302
    tenant.refresh_from_db()
    assert (tenant.name, tenant.slug, tenant.isolation) == ("Renamed", f"c{unique}", "schema")
    assert tenant.api_version == OLD
    assert (tenant.plan, tenant.rate_limits) == ("enterprise", {"reads": 99})
    refused = operator.post(
        url,
        {"name": "Renamed", "api_version": OLD, "plan": "free", "rate_limits": '{"bulk": 0}'},
        HTTP_HOST=HOST,
    )
    assert refused.status_code == 200  # the form again, with the field's error
    assert "Unknown rate limit classes" in refused.content.decode()
    tenant.refresh_from_db()
    assert tenant.plan == "enterprise"


def test_tenants_are_never_deleted_in_the_admin(operator: Client, unique: str) -> None:
    tenant = make_tenant(f"x{unique}")
    response = operator.get(
        reverse("admin:tenants_tenant_delete", args=[tenant.pk]), HTTP_HOST=HOST
    )
    assert response.status_code == 403


def test_the_list_shows_domains_and_finds_a_tenant_by_domain(operator: Client, unique: str) -> None:
    make_tenant(f"l{unique}", domain=f"shop-{unique}.example.com")
    response = operator.get(
        reverse("admin:tenants_tenant_changelist"), {"q": f"shop-{unique}"}, HTTP_HOST=HOST
    )
    assert response.context["cl"].result_count == 1
    assert f"shop-{unique}.example.com" in response.content.decode()


# --- status endpoint -------------------------------------------------------------------------


def test_the_status_endpoint_reports_the_tenant_and_its_onboarding(
    operator: Client, unique: str
) -> None:
    data = validate_onboarding(**onboarding_form(unique))
    tenant = request_onboarding(data=data, enqueue=False).onboarding.tenant
    # No worker consumes the queue in this test, whatever workers earlier tests left running.
    with nobody_else_consumes("default"):
        readiness.forget()
        response = operator.get(
            reverse("admin:tenants_tenant_status", args=[tenant.pk]), HTTP_HOST=HOST
        )
    readiness.forget()
    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    state = response.json()
    # The page says so, and how long it waited.
    assert "no worker consumes the default queue" in state.pop("waiting")
    assert state == {
        "status": "provisioning",
        "status_reason": "",
        "attempts": 0,
        "provisioning_ms": None,
        "domains": f"a{unique}.localhost (pending)",
    }


def test_the_status_endpoint_needs_an_admin_login(client: Client, unique: str) -> None:
    tenant = make_tenant(f"s{unique}")
    url = reverse("admin:tenants_tenant_status", args=[tenant.pk])
    response = client.get(url, HTTP_HOST=HOST)
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("admin:login"))
    client.force_login(make_user(f"plain-{unique}@example.com"))
    assert client.get(url, HTTP_HOST=HOST).status_code == 302


# --- actions ---------------------------------------------------------------------------------


def test_suspend_and_activate_actions_change_status(operator: Client, unique: str) -> None:
    tenant = make_tenant(f"s{unique}")
    asked = run_action(operator, "tenants_tenant", "suspend", tenant.pk)
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.ACTIVE  # not before a reason is given
    assert b'name="status_reason"' in asked.content

    response = run_action(
        operator, "tenants_tenant", "suspend", tenant.pk,
        confirm_status="yes", status_reason="unpaid invoice 2026-11",
    )  # fmt: skip
    tenant.refresh_from_db()
    assert (tenant.status, tenant.status_reason) == ("suspended", "unpaid invoice 2026-11")
    assert texts(response) == [f"1 suspended: s{unique}."]
    listing = operator.get(reverse("admin:tenants_tenant_changelist"), HTTP_HOST=HOST)
    assert '<td class="field-status_reason">unpaid invoice 2026-11</td>' in listing.content.decode()

    run_action(operator, "tenants_tenant", "activate", tenant.pk)
    tenant.refresh_from_db()
    assert (tenant.status, tenant.status_reason) == ("active", "")

    asked = run_action(operator, "tenants_tenant", "archive", tenant.pk)
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.ACTIVE  # archive asks first
    assert "Archive tenants" in asked.content.decode()
    run_action(operator, "tenants_tenant", "archive", tenant.pk, confirm_status="yes")
    tenant.refresh_from_db()
    assert tenant.status == TenantStatus.ARCHIVED


def test_a_refused_action_is_an_error_message_and_the_others_still_apply(
    operator: Client, unique: str
) -> None:
    provisioning = make_tenant(f"p{unique}", status=TenantStatus.PROVISIONING)
    active = make_tenant(f"q{unique}")
    response = run_action(
        operator, "tenants_tenant", "suspend", provisioning.pk, active.pk,
        confirm_status="yes", status_reason="abuse report",
    )  # fmt: skip
    assert response.status_code == 200
    provisioning.refresh_from_db()
    active.refresh_from_db()
    assert (provisioning.status, active.status) == ("provisioning", "suspended")
    assert f"Tenant 'p{unique}' is provisioning; it cannot become suspended." in texts(response)


def test_retry_action_queues_a_failed_tenant_again(
    operator: Client, unique: str, django_capture_on_commit_callbacks: Callable[..., Any]
) -> None:
    data = validate_onboarding(**onboarding_form(unique))
    onboarding = request_onboarding(data=data, enqueue=False).onboarding
    tenant = onboarding.tenant
    Tenant.objects.filter(pk=tenant.pk).update(status=TenantStatus.FAILED, status_reason="boom")
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = run_action(operator, "tenants_tenant", "retry", tenant.pk)
    tenant.refresh_from_db()
    assert (tenant.status, tenant.status_reason) == ("provisioning", "")
    assert queued(callbacks, "retry_onboarding") == 1
    assert texts(response) == [f"1 queued for provisioning again: a{unique}."]

    again = run_action(operator, "tenants_tenant", "retry", tenant.pk)
    assert texts(again) == [
        f"Tenant 'a{unique}' is provisioning and not stuck:"
        f" onboarding {onboarding.pk} has a message waiting for a worker."
    ]


def test_the_tenant_list_offers_every_action_including_the_fan_outs(operator: Client) -> None:
    response = operator.get(reverse("admin:tenants_tenant_changelist"), HTTP_HOST=HOST)
    offered = [name for name, _ in response.context["action_form"].fields["action"].choices]
    assert offered == [
        "",
        "suspend",
        "activate",
        "archive",
        "retry",
        "move_to_schema",
        "move_to_rls",
        "migrate_selected_tenants",
        "migrate_all_tenants",
    ]


def test_migrating_selected_tenants_without_a_schema_of_their_own_starts_no_run(
    operator: Client, unique: str
) -> None:
    pooled = make_tenant(f"r{unique}", isolation=Isolation.RLS)
    runs_before = MigrationRun.objects.count()
    response = run_action(operator, "tenants_tenant", "migrate_selected_tenants", pooled.pk)
    assert texts(response) == ["None of the selected tenants has a schema of its own."]
    assert MigrationRun.objects.count() == runs_before


# --- onboardings --------------------------------------------------------------------------------


def test_onboardings_are_read_only_and_never_show_the_digest(operator: Client, unique: str) -> None:
    data = validate_onboarding(**onboarding_form(unique))
    onboarding = request_onboarding(data=data, enqueue=False).onboarding
    assert (
        operator.get(reverse("admin:control_plane_onboarding_add"), HTTP_HOST=HOST).status_code
        == 403
    )
    page = operator.get(
        reverse("admin:control_plane_onboarding_change", args=[onboarding.pk]), HTTP_HOST=HOST
    )
    assert page.status_code == 200
    assert onboarding.token_digest not in page.content.decode()
    assert onboarding.domain in page.content.decode()
    assert b'name="_save"' not in page.content

"""Provisioning's public-schema writes: few round trips, the same rows as the ORM would make."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from control_plane.identity.models import ApiToken, Membership
from control_plane.tenancy.models import Onboarding, OnboardingStatus
from control_plane.tenancy.onboarding import (
    provision_onboarding,
    request_onboarding,
    validate_onboarding,
)
from tenants.models import Domain, Tenant, TenantStatus
from tenants.provisioning import drop_storage
from tests.factories import make_user, schema_exists
from tests.round_trips import round_trips

# Provisioning's statements on Django's connection: count the attempt while loading the request,
# then the identity rows and the status together. Raise it only for a reason.
PUBLIC_STATEMENTS = 2


@pytest.fixture
def onboarded(committed) -> Iterator[list[Tenant]]:
    """Tenants made by a test, discarded whole afterwards (storage and rows)."""
    made: list[Tenant] = []
    yield made
    for tenant in made:
        tenant.refresh_from_db()
        drop_storage(tenant)
        Tenant.objects.filter(pk=tenant.pk).delete()


def requested(slug: str, onboarded: list[Tenant], **fields: str) -> Onboarding:
    data = {
        "name": slug.title(),
        "slug": slug,
        "domain": f"{slug.replace('_', '-')}.localhost",
        "isolation": "rls",
        "owner_email": f"{slug}@example.com",
        **fields,
    }
    onboarding = request_onboarding(data=validate_onboarding(**data), enqueue=False).onboarding
    onboarded.append(onboarding.tenant)
    return onboarding


@pytest.mark.parametrize("isolation", ["schema", "rls"])
def test_provisioning_writes_every_public_row_in_two_statements(
    onboarded, unique, isolation, settings
) -> None:
    settings.SPARE_SCHEMAS = 0  # the clone path; no refill task for a worker that is not there
    onboarding = requested(f"rows_{isolation}_{unique}", onboarded, isolation=isolation)
    connection.ensure_connection()
    with CaptureQueriesContext(connection) as queries, round_trips(connection.connection) as sent:
        done = provision_onboarding(onboarding.pk)
    assert len(queries) == PUBLIC_STATEMENTS, [q["sql"][:100] for q in queries]
    assert len(sent) == PUBLIC_STATEMENTS, sent  # no BEGIN, COMMIT or SAVEPOINT around them
    tenant = Tenant.objects.get(pk=onboarding.tenant_id)
    stored = Onboarding.objects.get(pk=onboarding.pk)
    assert (tenant.status, stored.status, stored.attempts) == (
        TenantStatus.ACTIVE,
        OnboardingStatus.SUCCEEDED,
        1,
    )
    assert stored.provisioning_ms is not None
    assert stored.provisioning_ms > 0
    assert schema_exists(tenant.schema_name) is (isolation == "schema")
    assert tenant.revisions
    assert tenant.revisions == done.tenant.revisions
    # The returned objects say what the database says, without reading it again.
    assert (done.status, done.attempts, done.provisioning_ms) == (
        stored.status,
        stored.attempts,
        stored.provisioning_ms,
    )
    assert (done.tenant.status, done.finished_at) == (tenant.status, stored.finished_at)
    domain = Domain.objects.get(tenant=tenant)
    assert (domain.domain, domain.is_primary) == (onboarding.domain, True)
    owner = User.objects.get(memberships__tenant=tenant, memberships__role="owner")
    assert (owner.username, owner.email, owner.is_active, owner.is_staff) == (
        onboarding.owner_email,
        onboarding.owner_email,
        True,
        False,
    )
    assert not owner.check_password("")  # no password: the owner logs in once one is set
    token = ApiToken.objects.get(tenant=tenant)
    assert (token.user_id, token.prefix, token.digest, token.name) == (
        owner.pk,
        onboarding.token_prefix,
        onboarding.token_digest,
        "owner (onboarding)",
    )
    assert token.created_at is not None
    assert token.is_usable()


def test_an_existing_user_with_the_owner_email_in_any_case_becomes_the_owner(
    onboarded, unique
) -> None:
    existing = make_user(f"Owner-{unique}@Example.com")
    users = User.objects.count()
    onboarding = requested(f"known_{unique}", onboarded, owner_email=f"owner-{unique}@example.com")
    provision_onboarding(onboarding.pk)
    assert Membership.objects.get(tenant_id=onboarding.tenant_id).user_id == existing.pk
    assert User.objects.count() == users


def test_a_user_named_after_the_owner_email_becomes_the_owner(onboarded, unique) -> None:
    email = f"renamed-{unique}@example.com"
    named = User.objects.create_user(username=email, email=f"elsewhere-{unique}@example.com")
    onboarding = requested(f"named_{unique}", onboarded, owner_email=email)
    provision_onboarding(onboarding.pk)
    assert Membership.objects.get(tenant_id=onboarding.tenant_id).user_id == named.pk
    named.refresh_from_db()
    assert named.email == f"elsewhere-{unique}@example.com"  # found, not changed


def test_provisioning_a_succeeded_onboarding_again_changes_nothing(onboarded, unique) -> None:
    onboarding = requested(f"again_{unique}", onboarded)
    provision_onboarding(onboarding.pk)
    with CaptureQueriesContext(connection) as queries:
        again = provision_onboarding(onboarding.pk)
    assert len(queries) == 1
    assert (again.status, again.attempts) == (OnboardingStatus.SUCCEEDED, 1)
    assert Onboarding.objects.get(pk=onboarding.pk).attempts == 1
    assert Membership.objects.filter(tenant_id=onboarding.tenant_id).count() == 1


def test_a_taken_domain_fails_provisioning_with_no_identity_row_written(onboarded, unique) -> None:
    onboarding = requested(f"taken_{unique}", onboarded)
    other = requested(f"taker_{unique}", onboarded)
    Domain.objects.create(domain=onboarding.domain, tenant=other.tenant, is_primary=False)
    users = User.objects.count()
    with pytest.raises(Exception, match="tenants_domain"):
        provision_onboarding(onboarding.pk)
    stored = Onboarding.objects.get(pk=onboarding.pk)
    assert (stored.status, stored.attempts) == (OnboardingStatus.FAILED, 1)
    assert "IntegrityError" in stored.error
    assert Tenant.objects.get(pk=onboarding.tenant_id).status == TenantStatus.FAILED
    assert not Membership.objects.filter(tenant_id=onboarding.tenant_id).exists()
    assert not ApiToken.objects.filter(tenant_id=onboarding.tenant_id).exists()
    assert User.objects.count() == users


def test_the_owners_first_request_finds_the_new_host_cached(onboarded, unique, settings) -> None:
    """Activation leaves the cache epoch alone (every tenant's entries stay warm) and caches the
    new host under it, so the owner's first request reads no tenant or domain row."""
    from tenants.resolution import resolve_tenant

    settings.SPARE_SCHEMAS = 0
    settings.CACHE_EPOCH_CHECK_SECONDS = 0  # every read of the epoch goes to the database
    onboarding = requested(f"warm_{unique}", onboarded)
    with connection.cursor() as cursor:
        cursor.execute("SELECT value FROM public.cache_epoch WHERE id = 1")
        before = cursor.fetchone()[0]
    provision_onboarding(onboarding.pk)
    with connection.cursor() as cursor:
        cursor.execute("SELECT value FROM public.cache_epoch WHERE id = 1")
        assert cursor.fetchone()[0] == before
    with CaptureQueriesContext(connection) as captured:
        tenant = resolve_tenant(onboarding.domain)
    assert tenant is not None
    assert tenant.pk == onboarding.tenant_id
    assert tenant.status == TenantStatus.ACTIVE
    assert [q["sql"] for q in captured.captured_queries if "tenants_" in q["sql"]] == []


def _owner_request(slug: str, onboarded: list[Tenant], **fields: str) -> tuple[Onboarding, str]:
    """An rls onboarding requested (not provisioned) and its owner's token."""
    data = {"name": slug.title(), "slug": slug, "domain": f"{slug.replace('_', '-')}.localhost",
            "isolation": "rls", "owner_email": f"{slug}@example.com", **fields}  # fmt: skip
    made = request_onboarding(data=validate_onboarding(**data), enqueue=False)
    onboarded.append(made.onboarding.tenant)
    assert made.token is not None
    return made.onboarding, made.token


def _me(onboarding: Onboarding, token: str) -> Any:
    return Client().get(
        "/api/v1/me", HTTP_HOST=onboarding.domain, HTTP_AUTHORIZATION=f"Bearer {token}"
    )


def test_the_owners_first_request_after_polls_reads_no_token_row_and_records_its_use(
    onboarded, unique, settings
) -> None:
    """Activation caches the owner's token as authentication would decide it (owner, this
    tenant), marked unused: the first request is 200 even after polls that met no tenant, runs
    no token query, and writes the token's first last_used_at; later ones write nothing."""
    settings.SPARE_SCHEMAS = 0
    # This process sees the epoch activation read (other tests move it; a web process sees a
    # move within CACHE_EPOCH_CHECK_SECONDS).
    settings.CACHE_EPOCH_CHECK_SECONDS = 0
    onboarding, token = _owner_request(f"first_{unique}", onboarded)
    for _ in range(2):  # polls while provisioning: no domain yet, nothing may stay cached
        assert _me(onboarding, token).status_code == 404
    provision_onboarding(onboarding.pk)
    stored = ApiToken.objects.get(tenant_id=onboarding.tenant_id)
    assert stored.last_used_at is None
    with CaptureQueriesContext(connection) as captured:
        response = _me(onboarding, token)
    assert response.status_code == 200, response.content
    assert response.json()["role"] == "owner"
    sql = [q["sql"] for q in captured.captured_queries if "control_plane_apitoken" in q["sql"]]
    assert len(sql) == 1, sql  # no SELECT of the token
    assert sql[0].startswith("UPDATE"), sql  # its first use
    first = ApiToken.objects.get(pk=stored.pk).last_used_at
    assert first is not None
    with CaptureQueriesContext(connection) as captured:
        assert _me(onboarding, token).status_code == 200
    assert not [q for q in captured.captured_queries if "control_plane_apitoken" in q["sql"]]
    assert ApiToken.objects.get(pk=stored.pk).last_used_at == first


def test_a_primed_owner_token_revoked_before_its_first_use_is_refused(
    onboarded, unique, settings
) -> None:
    settings.SPARE_SCHEMAS = 0
    onboarding, token = _owner_request(f"revoked_{unique}", onboarded)
    provision_onboarding(onboarding.pk)
    stored = ApiToken.objects.get(tenant_id=onboarding.tenant_id)
    stored.revoked_at = timezone.now()
    stored.save()  # forgets the token's cache entries (principal_signals)
    assert _me(onboarding, token).status_code == 401


def test_an_inactive_existing_owner_is_not_primed_and_is_refused(
    onboarded, unique, settings
) -> None:
    settings.SPARE_SCHEMAS = 0
    email = f"inactive-{unique}@example.com"
    User.objects.create_user(username=email, email=email, is_active=False)
    onboarding, token = _owner_request(f"inactive_{unique}", onboarded, owner_email=email)
    provision_onboarding(onboarding.pk)
    assert _me(onboarding, token).status_code == 401

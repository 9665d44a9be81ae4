"""Provisioning while PostgreSQL cannot be reached: retried, never recorded as the tenant's failure
until the retries are spent (the owner pool points at a port no server listens on: refused)."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from control_plane.tenancy.models import Onboarding, OnboardingStatus
from control_plane.tenancy.onboarding import (
    provision_onboarding,
    request_onboarding,
    validate_onboarding,
)
from tenants import database_roles
from tenants.models import Tenant, TenantStatus
from tenants.outages import is_connection_failure
from tests.processes import free_port


@pytest.fixture
def owner_unreachable(settings) -> Iterator[None]:
    settings.MIGRATION_DATABASE_URL = f"postgres://postgres@127.0.0.1:{free_port()}/postgres"
    settings.OWNER_POOL_TIMEOUT_SECONDS = 0.5
    settings.SPARE_SCHEMAS = 0
    database_roles._owner_pool.cache_clear()
    try:
        yield
    finally:
        database_roles._owner_pool().close()
        database_roles._owner_pool.cache_clear()


def requested(unique: str) -> Onboarding:
    data = validate_onboarding(
        name="F",
        slug=f"f{unique}",
        domain=f"f{unique}.localhost",
        isolation="rls",
        owner_email=f"f{unique}@example.com",
    )
    return request_onboarding(data=data, enqueue=False).onboarding


def test_a_lost_connection_with_retries_left_leaves_the_tenant_provisioning(
    committed, owner_unreachable, unique
) -> None:
    onboarding = requested(unique)
    with pytest.raises(psycopg.OperationalError) as raised:
        provision_onboarding(onboarding.pk, will_retry=True)
    assert is_connection_failure(raised.value)
    assert Tenant.objects.get(pk=onboarding.tenant_id).status == TenantStatus.PROVISIONING
    assert Onboarding.objects.get(pk=onboarding.pk).status != OnboardingStatus.FAILED
    Tenant.objects.filter(pk=onboarding.tenant_id).delete()


def test_the_last_attempt_records_the_failure(committed, owner_unreachable, unique) -> None:
    onboarding = requested(unique)
    with pytest.raises(psycopg.OperationalError):
        provision_onboarding(onboarding.pk, will_retry=False)
    assert Tenant.objects.get(pk=onboarding.tenant_id).status == TenantStatus.FAILED
    Tenant.objects.filter(pk=onboarding.tenant_id).delete()

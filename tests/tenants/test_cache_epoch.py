"""A new tenant's activation leaves the cache epoch alone; every other tenant change still moves it.

The epoch guards every cached host and principal of every tenant (tenants.cache_epoch): a move
costs the whole platform a cold cache, so it moves only when something cached could depend on the
change (tenants migration 0007). Rows commit here (no wrapping transaction), as in production.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.db import connection, transaction

from tenants.models import Domain, Tenant, TenantStatus, schema_name_for


def epoch() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT value FROM public.cache_epoch WHERE id = 1")
        return int(cursor.fetchone()[0])


@pytest.fixture
def made(committed) -> Iterator[list[Tenant]]:
    tenants: list[Tenant] = []
    yield tenants
    Tenant.objects.filter(pk__in=[t.pk for t in tenants]).delete()


def provisioning_tenant(slug: str, made: list[Tenant]) -> Tenant:
    tenant = Tenant.objects.create(
        name=slug.title(), slug=slug, schema_name=schema_name_for(slug),
        status=TenantStatus.PROVISIONING,
    )  # fmt: skip
    made.append(tenant)
    return tenant


def insert_domain(domain: str, tenant: Tenant) -> None:
    """Without Domain.save(), whose own atomic block would be a savepoint."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO tenants_domain (domain, tenant_id, is_primary) VALUES (%s, %s, true)",
            [domain, tenant.pk],
        )


def activate(tenant: Tenant) -> None:
    Tenant.objects.filter(pk=tenant.pk).update(status=TenantStatus.ACTIVE)


def test_activating_a_new_tenant_with_its_first_domain_leaves_the_epoch_alone(made, unique) -> None:
    tenant = provisioning_tenant(f"e{unique}", made)
    before = epoch()
    with transaction.atomic():
        insert_domain(f"e{unique}.localhost", tenant)  # as onboarding's activation writes it
        activate(tenant)
    assert epoch() == before


def test_activating_a_tenant_whose_domain_was_there_before_moves_the_epoch(made, unique) -> None:
    """Its host may have been resolved (and cached) while it was provisioning."""
    tenant = provisioning_tenant(f"o{unique}", made)
    Domain.objects.create(domain=f"o{unique}.localhost", tenant=tenant, is_primary=True)
    before = epoch()
    activate(tenant)
    assert epoch() == before + 1


def test_a_domain_written_in_a_savepoint_counts_as_older(made, unique) -> None:
    """A subtransaction's row carries an xid of its own: the trigger errs on the safe side."""
    tenant = provisioning_tenant(f"p{unique}", made)
    before = epoch()
    with transaction.atomic():
        with transaction.atomic():  # a savepoint
            insert_domain(f"p{unique}.localhost", tenant)
        activate(tenant)
    assert epoch() == before + 1


def test_any_change_to_an_active_tenant_still_moves_the_epoch(made, unique) -> None:
    tenant = provisioning_tenant(f"a{unique}", made)
    activate(tenant)
    before = epoch()
    Tenant.objects.filter(pk=tenant.pk).update(status=TenantStatus.SUSPENDED)
    assert epoch() == before + 1

"""A live API for the contract tests: a gunicorn process on this session's database and Redis,
a schema-mode and an rls-mode tenant with member tokens, and a staff token for the operator API.

Rows the server writes are committed; the tenants (and any the operator fuzzing onboards) are
dropped at the end of the session.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.db.models import Max

from control_plane.fanout.models import MigrationRun
from tenants.models import Isolation, Tenant
from tenants.resolution import forget_tenant
from tests.factories import make_token, make_user, public_tenant
from tests.processes import Gunicorn, start_gunicorn, stop_process
from tests.taskflow.conftest import TenantFixture, discard, provisioned_tenant

PUBLIC_HOST = "localhost"


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gunicorn]:
    """gunicorn as deployments run it, on this session's database and Redis."""
    server = start_gunicorn(tmp_path_factory.mktemp("contract"), workers=2, threads=4)
    try:
        yield server
    finally:
        stop_process(server.process)


@pytest.fixture(scope="session")
def contract_tenants(django_db_blocker: Any) -> Iterator[dict[str, TenantFixture]]:
    """One tenant per isolation mode, each with a token per role, committed for the server."""
    with django_db_blocker.unblock():
        tenants = {
            "schema": provisioned_tenant(Isolation.SCHEMA),
            "rls": provisioned_tenant(Isolation.RLS),
        }
    yield tenants
    with django_db_blocker.unblock():
        for fixture in tenants.values():
            discard(fixture)


@pytest.fixture(scope="session")
def staff_token(django_db_blocker: Any) -> Iterator[str]:
    """A staff user's token on the public host, for the operator API.

    The operator fuzzing acts on whatever it finds: at the end, tenants it onboarded are dropped,
    migration runs it started are deleted, and the tenants that were there before get their
    status and API version back (and their cached resolution forgotten).
    """
    with django_db_blocker.unblock():
        before = {t.pk: (t.status, t.api_version) for t in Tenant.objects.all()}
        last_run = MigrationRun.objects.aggregate(last=Max("pk"))["last"] or 0
        user = make_user(f"contract-staff-{uuid.uuid4().hex[:8]}@example.com", staff=True)
        token = make_token(user, public_tenant())
    yield token
    with django_db_blocker.unblock():
        MigrationRun.objects.filter(pk__gt=last_run).delete()
        for tenant in Tenant.objects.all():
            if tenant.pk not in before:
                discard(TenantFixture(tenant=tenant, host=""))
            elif (tenant.status, tenant.api_version) != before[tenant.pk]:
                status, api_version = before[tenant.pk]
                Tenant.objects.filter(pk=tenant.pk).update(status=status, api_version=api_version)
                forget_tenant(tenant)
        user.delete()

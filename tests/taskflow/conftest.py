"""Tenants with provisioned storage and members of every role, for the TaskFlow API tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.db import connection
from django.test import Client

from tenants.models import Isolation, Tenant
from tenants.provisioning import drop_storage, provision_storage
from tests.factories import make_member, make_tenant

ROLES = ("owner", "admin", "member", "viewer")


@dataclass
class TenantFixture:
    """A provisioned tenant and an API client per role."""

    tenant: Tenant
    host: str
    tokens: dict[str, str] = field(default_factory=dict)
    user_ids: dict[str, int] = field(default_factory=dict)

    def client(self, role: str = "admin") -> Client:
        return Client(HTTP_HOST=self.host, headers={"Authorization": f"Bearer {self.tokens[role]}"})

    def api(self, role: str = "admin") -> Api:
        return Api(self.client(role))


class Api:
    """A thin JSON helper over Django's test client."""

    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, path: str, **params: Any) -> Any:
        return self.client.get(path, params)

    def post(self, path: str, body: Any = None, **headers: str) -> Any:
        return self.client.post(path, body or {}, content_type="application/json", headers=headers)

    def patch(self, path: str, body: Any, **headers: str) -> Any:
        return self.client.patch(path, body, content_type="application/json", headers=headers)

    def delete(self, path: str, body: Any = None, **headers: str) -> Any:
        if body is None:
            return self.client.delete(path, headers=headers)
        return self.client.delete(path, body, content_type="application/json", headers=headers)


def provisioned_tenant(isolation: str = Isolation.SCHEMA) -> TenantFixture:
    # A test may have left Django's connection on a tenant schema (requests never do).
    connection.set_schema_to_public()  # type: ignore[attr-defined]
    slug = f"tf{uuid.uuid4().hex[:10]}"
    tenant = make_tenant(slug, isolation=isolation)
    revisions = provision_storage(tenant)
    Tenant.objects.filter(pk=tenant.pk).update(revisions=revisions)
    fixture = TenantFixture(tenant=tenant, host=f"{slug}.localhost")
    for role in ROLES:
        user, token = make_member(tenant, f"{role}-{slug}@example.com", role=role)
        fixture.tokens[role], fixture.user_ids[role] = token, user.pk
    return fixture


ISOLATIONS = [Isolation.SCHEMA, Isolation.RLS]


@pytest.fixture(scope="session", params=ISOLATIONS, ids=["schema", "rls"])
def tenant_pair(
    request: Any, django_db_blocker: Any
) -> Iterator[tuple[TenantFixture, TenantFixture]]:
    """Two tenants of one isolation mode, shared by the session's TaskFlow tests (rows use
    unique keys). Every test that uses them runs once per mode: one code path, both placements."""
    with django_db_blocker.unblock():
        pair = (provisioned_tenant(request.param), provisioned_tenant(request.param))
    yield pair
    with django_db_blocker.unblock():
        for fixture in pair:
            discard(fixture)


@pytest.fixture
def tenant_a(tenant_pair: tuple[TenantFixture, TenantFixture], committed: None) -> TenantFixture:
    return tenant_pair[0]


@pytest.fixture
def tenant_b(tenant_pair: tuple[TenantFixture, TenantFixture], committed: None) -> TenantFixture:
    return tenant_pair[1]


@pytest.fixture(params=ISOLATIONS, ids=["schema", "rls"])
def fresh_tenant(request: Any, committed: None) -> Iterator[TenantFixture]:
    """A tenant of its own, for tests that count every row (in each mode)."""
    fixture = provisioned_tenant(request.param)
    yield fixture
    discard(fixture)


def discard(fixture: TenantFixture) -> None:
    """Drop a test tenant's storage and its rows, so later tests never meet a half tenant."""
    fixture.tenant.refresh_from_db()
    drop_storage(fixture.tenant)
    Tenant.objects.filter(pk=fixture.tenant.pk).delete()


def new_key() -> str:
    return "K" + uuid.uuid4().hex[:10].upper()


def set_due_switch(value: str | None) -> None:
    """Set the `tasks.due` read switch (None: never set, as before the evolution's switch)."""
    from taskflow import due
    from tenants import switches
    from tenants.models import ReadSwitch

    if value is None:
        ReadSwitch.objects.filter(name=due.DUE_SWITCH).delete()
    else:
        switches.set_value(due.DUE_SWITCH, value)
    switches._cache.clear()


# Fixtures through which a test reaches a process other than its own (a Celery worker).
OTHER_PROCESS_FIXTURES = frozenset({"worker", "celery_worker_process"})


@pytest.fixture(params=["due_date", "due_at"], ids=["before-switch", "after-switch"])
def due_read(request: Any, committed: None) -> Iterator[str]:
    """The test runs before and after the `tasks.due` switch: the column TaskFlow reads.

    This process sees a flip at once (set_due_switch clears its cache). Other processes (a
    worker) see it within tenants.switches.CACHE_S, so a test that reaches one waits that long
    after each flip; a test that serves every request in-process has nothing to wait for.
    """
    from tenants import switches

    others = bool(OTHER_PROCESS_FIXTURES & set(request.fixturenames))
    set_due_switch(None if request.param == "due_date" else request.param)
    if others:
        time.sleep(switches.CACHE_S)
    yield request.param
    set_due_switch(None)
    if others:
        time.sleep(switches.CACHE_S)

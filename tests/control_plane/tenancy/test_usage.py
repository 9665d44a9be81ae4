"""A tenant's usage on its admin page: rows, row data and writing requests, in either placement."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth.models import User
from django.test import Client

from taskflow.usage import tenant_usage
from tenants.binding import binding_for, tenant_session
from tenants.models import Isolation
from tests.control_plane.admin_support import HOST, reverse
from tests.taskflow.conftest import TenantFixture, discard, new_key, provisioned_tenant


@pytest.fixture(params=[Isolation.SCHEMA, Isolation.RLS], ids=["schema", "rls"])
def tenant(request: pytest.FixtureRequest, committed: None) -> Iterator[TenantFixture]:
    fixture = provisioned_tenant(request.param)
    yield fixture
    discard(fixture)


def test_usage_counts_the_tenants_own_rows_and_writes(tenant: TenantFixture, unique: str) -> None:
    api = tenant.api("admin")
    project = api.post("/api/v1/projects", {"key": new_key(), "name": "Usage"}).json()
    for i in range(3):
        api.post("/api/v1/tasks", {"project_id": project["id"], "title": f"t{i}"})
    with tenant_session(binding_for(tenant.tenant)) as session:
        usage = tenant_usage(session)
    assert (usage.rows["projects"], usage.rows["tasks"]) == (1, 3)
    assert usage.rows["tasks_history"] == 3
    assert usage.requests_last_day == 4  # one project and three tasks, each its own request
    assert usage.bytes > 0

    operator = Client()
    operator.force_login(User.objects.create_superuser(f"u_{unique}", "u@example.com", "x"))
    page = operator.get(
        reverse("admin:tenants_tenant_change", args=[tenant.tenant.pk]), HTTP_HOST=HOST
    ).content.decode()
    assert f'<dd id="tenant-usage-rows">{usage.total_rows:,}</dd>' in page
    assert '<dd id="tenant-usage-requests">4</dd>' in page

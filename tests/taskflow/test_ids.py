"""Ids per tenant: a tenant's ids advance only with its own writes and say nothing of others'.

Each create writes its row and one history entry, both from the tenant's own sequence
(tenants.ids), so a tenant's next create is exactly two ids after its previous one whatever
other tenants wrote in between, in both placements; and two tenants may hold the same ids.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from tenants.database_roles import owner_connection
from tenants.ids import sequence_name
from tenants.models import Isolation
from tests.taskflow.conftest import (
    ISOLATIONS,
    TenantFixture,
    discard,
    new_key,
    provisioned_tenant,
)

IDS_PER_CREATE = 2  # the row and its history entry


@pytest.fixture(params=ISOLATIONS, ids=["schema", "rls"])
def fresh_pair(request, committed) -> Iterator[tuple[TenantFixture, TenantFixture]]:
    pair = (provisioned_tenant(request.param), provisioned_tenant(request.param))
    yield pair
    for fixture in pair:
        discard(fixture)


def create_task(fixture: TenantFixture, project_id: int, title: str) -> dict:
    response = fixture.api().post("/api/v1/tasks", {"project_id": project_id, "title": title})
    assert response.status_code == 201, response.content
    return response.json()


def test_a_tenants_ids_advance_only_with_its_own_writes(
    fresh_pair: tuple[TenantFixture, TenantFixture],
) -> None:
    a, b = fresh_pair
    project_a = a.api().post("/api/v1/projects", {"key": new_key(), "name": "A"}).json()
    assert project_a["id"] == 1  # a new tenant starts at 1, whatever the platform wrote before
    first = [create_task(a, project_a["id"], f"a{i}")["id"] for i in range(3)]

    project_b = b.api().post("/api/v1/projects", {"key": new_key(), "name": "B"}).json()
    b_ids = [create_task(b, project_b["id"], f"b{i}")["id"] for i in range(40)]

    then = [create_task(a, project_a["id"], f"a-again{i}")["id"] for i in range(3)]
    ids = first + then
    assert ids == list(range(ids[0], ids[0] + IDS_PER_CREATE * len(ids), IDS_PER_CREATE))
    # History entries come from the same sequence: between two creates of A, only A's entry.
    history = a.api().get(f"/api/v1/tasks/{then[0]}/history").json()["results"]
    assert [h["id"] for h in history] == [then[0] + 1]

    # The same ids exist in both tenants; each sees its own row under it.
    assert project_b["id"] == 1
    assert set(ids) & set(b_ids)
    shared_id = ids[0]
    assert a.api().get(f"/api/v1/tasks/{shared_id}").json()["title"] == "a0"
    assert b.api().get(f"/api/v1/tasks/{shared_id}").json()["title"] != "a0"


def test_without_a_tenant_there_is_no_id_and_row_level_security_refuses_the_row(
    committed,
) -> None:
    """The id default draws from the bound tenant's sequence; with no tenant it gives NULL and
    the insert is refused by row-level security, as before ids were per tenant. A tenant's
    sequence goes with its storage."""
    fixture = provisioned_tenant(Isolation.RLS)
    name = f"public.{sequence_name(fixture.tenant.pk)}"
    try:
        with owner_connection() as conn:
            assert conn.execute("SELECT to_regclass(%s) IS NOT NULL", (name,)).fetchone() == (True,)
            assert conn.execute("SELECT public.taskflow_next_id()").fetchone() == (None,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
                conn.execute(
                    "INSERT INTO shared.projects (tenant_id, key, name) VALUES (%s, 'X', 'x')",
                    (fixture.tenant.pk,),
                )
    finally:
        discard(fixture)
    with owner_connection() as conn:
        assert conn.execute("SELECT to_regclass(%s)", (name,)).fetchone() == (None,)

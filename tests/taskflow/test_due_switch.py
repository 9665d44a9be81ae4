"""The application side of the `tasks_due_at` evolution: the `tasks.due` read switch.

Before the switch the API reads and writes `due_date` (and says so, so the contract gate waits);
after it, `due_at`. The newest API version shows `due_at`, older ones `due_date`, in both states
and after the contract dropped `due_date`; sorts, filters, cursors and history follow.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from psycopg import sql

from control_plane.evolution import phases
from migrations_sqla.migrator import migrate_schema
from taskflow import due
from tenants import switches
from tenants.database_roles import owner_connection
from tenants.models import Isolation, ReadSwitch
from tenants.placement import SHARED_SCHEMA
from tests.taskflow.conftest import Api, TenantFixture, discard, provisioned_tenant

OLD = "2026-12-01"  # the newest version that shows due_date


def set_switch(value: str | None) -> None:
    if value is None:
        ReadSwitch.objects.filter(name=due.DUE_SWITCH).delete()
    else:
        switches.set_value(due.DUE_SWITCH, value)
    switches._cache.clear()


@pytest.fixture
def switched() -> Iterator[None]:
    """The `tasks.due` switch on (as the evolution's switch phase leaves it), off again after."""
    set_switch(due.DUE_AT)
    yield
    set_switch(None)


@pytest.fixture
def switch_back() -> Iterator[None]:
    """Leaves the switch off whatever the test did with it."""
    yield
    set_switch(None)


class Client:
    """A client at one API version."""

    def __init__(self, api: Api, version: str | None = None) -> None:
        self.api, self.headers = api, ({"TaskFlow-Version": version} if version else {})

    def get(self, path: str, **params: Any) -> Any:
        response = self.api.client.get(path, params, headers=self.headers)
        assert response.status_code == 200, response.content
        return response.json()

    def get_url(self, url: str) -> Any:
        return self.api.client.get(url, headers=self.headers)

    def post(self, path: str, body: dict[str, Any]) -> Any:
        response = self.api.client.post(
            path, body, content_type="application/json", headers=self.headers
        )
        assert response.status_code == 201, response.content
        return response.json()

    def patch(self, path: str, body: dict[str, Any]) -> Any:
        response = self.api.client.patch(
            path, body, content_type="application/json", headers=self.headers
        )
        assert response.status_code == 200, response.content
        return response.json()


def stored(fixture: TenantFixture, task_id: int) -> dict[str, Any]:
    """The task's due columns as the database holds them (those that exist)."""
    tenant = fixture.tenant
    schema = SHARED_SCHEMA if tenant.isolation == Isolation.RLS else tenant.schema_name
    with owner_connection() as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant.pk),))
        cursor = conn.execute(
            sql.SQL("SELECT to_jsonb(t) FROM {}.tasks t WHERE tenant_id = %s AND id = %s").format(
                sql.Identifier(schema)
            ),
            (tenant.pk, task_id),
        )
        row = cursor.fetchone()
    assert row is not None
    return {k: v for k, v in row[0].items() if k in ("due_date", "due_at")}


def project_of(client: Client) -> int:
    key = "D" + uuid.uuid4().hex[:8].upper()
    return int(client.post("/api/v1/projects", {"key": key, "name": "due"})["id"])


def test_this_release_reports_that_it_serves_due_date_so_the_contract_gate_waits(
    tenant_a: TenantFixture,
) -> None:
    switches._reported.clear()
    for key in switches._redis().scan_iter(match="switch:tasks.due:*"):
        switches._redis().delete(key)
    response = tenant_a.client("viewer").get("/api/v1/tasks")
    assert response.status_code == 200
    assert switches.process_name() in switches.served("tasks.due", "due_date")
    gate = phases.contract_gate(phases.get_evolution("tasks_due_at"))
    assert any("served due_date" in reason for reason in gate.reasons)


def test_before_the_switch_due_at_is_a_whole_day_kept_in_due_date(
    tenant_a: TenantFixture, switch_back: None
) -> None:
    set_switch(None)
    new, old = Client(tenant_a.api("member")), Client(tenant_a.api("member"), OLD)
    project = project_of(new)
    task = new.post(
        "/api/v1/tasks",
        {"project_id": project, "title": "t", "due_at": "2030-01-02T15:30:00+02:00"},
    )
    assert task["due_at"] == "2030-01-02T00:00:00Z"  # read from due_date: its UTC day
    assert "due_date" not in task
    assert stored(tenant_a, task["id"]) == {
        "due_date": "2030-01-02",
        "due_at": "2030-01-02T00:00:00+00:00",  # the expand's trigger
    }
    seen = old.get(f"/api/v1/tasks/{task['id']}")
    assert seen["due_date"] == "2030-01-02"
    assert "due_at" not in seen
    assert list(seen)[list(task).index("due_at")] == "due_date"  # in the field's place
    changed = old.patch(f"/api/v1/tasks/{task['id']}", {"due_date": "2030-02-03", "version": 1})
    assert changed["due_date"] == "2030-02-03"
    assert new.get(f"/api/v1/tasks/{task['id']}")["due_at"] == "2030-02-03T00:00:00Z"


def test_after_the_switch_due_at_keeps_its_time_and_old_clients_see_its_day(
    tenant_a: TenantFixture, switched: None
) -> None:
    new, old = Client(tenant_a.api("member")), Client(tenant_a.api("member"), OLD)
    project = project_of(new)
    task = new.post(
        "/api/v1/tasks",
        {"project_id": project, "title": "t", "due_at": "2030-01-02T23:30:00-02:00"},
    )
    assert task["due_at"] == "2030-01-03T01:30:00Z"
    assert stored(tenant_a, task["id"]) == {
        "due_date": "2030-01-03",  # the trigger keeps the old column in step for old code
        "due_at": "2030-01-03T01:30:00+00:00",
    }
    assert old.get(f"/api/v1/tasks/{task['id']}")["due_date"] == "2030-01-03"
    # An old client writing back the day it was shown keeps the time; another day is 00:00 UTC.
    kept = old.patch(f"/api/v1/tasks/{task['id']}", {"due_date": "2030-01-03", "title": "u",
                                                     "version": 1})  # fmt: skip
    assert kept["due_date"] == "2030-01-03"
    assert new.get(f"/api/v1/tasks/{task['id']}")["due_at"] == "2030-01-03T01:30:00Z"
    moved = old.patch(f"/api/v1/tasks/{task['id']}", {"due_date": "2030-01-05", "version": 2})
    assert moved["due_date"] == "2030-01-05"
    assert new.get(f"/api/v1/tasks/{task['id']}")["due_at"] == "2030-01-05T00:00:00Z"
    created = old.post("/api/v1/tasks", {"project_id": project, "title": "o", "due_date": None})
    assert created["due_date"] is None
    cleared = new.patch(f"/api/v1/tasks/{task['id']}", {"due_at": None, "version": 3})
    assert cleared["due_at"] is None
    assert stored(tenant_a, task["id"]) == {"due_date": None, "due_at": None}


def _titles(page: dict[str, Any]) -> list[str]:
    return [t["title"] for t in page["results"]]


@pytest.mark.parametrize("switch", [None, due.DUE_AT], ids=["before", "after"])
def test_sort_and_filters_by_due_in_every_version(
    tenant_a: TenantFixture, switch: str | None, switch_back: None
) -> None:
    set_switch(switch)
    new, old = Client(tenant_a.api("member")), Client(tenant_a.api("member"), OLD)
    project = project_of(new)
    for title, due_at in [
        ("b", "2030-01-02T10:00:00Z"), ("none", None), ("a", "2030-01-01T00:00:00Z"),
        ("c", "2030-01-03T00:00:00Z"),
    ]:  # fmt: skip
        new.post("/api/v1/tasks", {"project_id": project, "title": title, "due_at": due_at})
    base = {"project": project}
    assert _titles(new.get("/api/v1/tasks", sort="due_at", **base)) == ["a", "b", "c", "none"]
    assert _titles(old.get("/api/v1/tasks", sort="due_date", **base)) == ["a", "b", "c", "none"]
    assert _titles(old.get("/api/v1/tasks", sort="-priority,-due_date", **base)) == [
        "none", "c", "b", "a"
    ]  # fmt: skip
    # A date filter means whole UTC days in every version; a time is exact in the newest.
    for client in (new, old):
        assert _titles(client.get("/api/v1/tasks", due_after="2030-01-01", **base)) == ["b", "c"]
        assert _titles(client.get("/api/v1/tasks", due_before="2030-01-02", **base)) == ["a"]
    after_nine = new.get("/api/v1/tasks", due_after="2030-01-02T09:00:00Z", sort="due_at", **base)
    before_eleven = new.get("/api/v1/tasks", due_before="2030-01-02T11:00:00+00:00", **base)
    if switch == due.DUE_AT:
        assert _titles(after_nine) == ["b", "c"]
        assert sorted(_titles(before_eleven)) == ["a", "b"]
    else:  # read from due_date, "b" is due at 00:00 of its day
        assert _titles(after_nine) == ["c"]
        assert sorted(_titles(before_eleven)) == ["a", "b"]
    # Links keep each version's names.
    page = old.get("/api/v1/tasks", sort="due_date", limit=1, **base)
    assert "sort=due_date" in page["next"]
    page = new.get("/api/v1/tasks", sort="due_at", limit=1, **base)
    assert "sort=due_at" in page["next"]


def _walk(client: Client, first: str) -> list[str]:
    titles, url = [], first
    while url:
        response = client.get_url(url)
        assert response.status_code == 200, response.content
        titles += _titles(response.json())
        url = response.json()["next"]
    return titles


@pytest.mark.parametrize("version", [None, OLD], ids=["newest", "old"])
def test_a_cursor_issued_before_the_switch_pages_on_after_it(
    tenant_a: TenantFixture, version: str | None, switch_back: None
) -> None:
    set_switch(None)
    client = Client(tenant_a.api("member"), version)
    project = project_of(client)
    key = "due_date" if version else "due_at"
    for i in range(7):
        day = None if i == 3 else f"2030-01-0{1 + i % 3}"
        client.post("/api/v1/tasks", {"project_id": project, "title": f"t{i}", key: day})
    everything = _titles(client.get("/api/v1/tasks", sort=f"-priority,{key}", project=project))
    first = client.get("/api/v1/tasks", sort=f"-priority,{key}", project=project, limit=3)
    set_switch(due.DUE_AT)  # a client pages on across the switch
    assert _titles(first) + _walk(client, first["next"]) == everything
    # The other way (a cursor of the switched order, the switch rolled back): a clear 400.
    first = client.get("/api/v1/tasks", sort=key, project=project, limit=3)
    set_switch(None)
    refused = client.get_url(first["next"])
    assert refused.status_code == 400
    assert refused["Content-Type"] == "application/problem+json"
    assert "first page" in refused.json()["detail"]


def test_history_shows_due_at_in_the_newest_version_and_due_date_in_older_ones(
    tenant_a: TenantFixture, switched: None
) -> None:
    new, old = Client(tenant_a.api("member")), Client(tenant_a.api("member"), OLD)
    task = new.post(
        "/api/v1/tasks",
        {"project_id": project_of(new), "title": "h", "due_at": "2030-01-02T10:00:00Z"},
    )
    new.patch(f"/api/v1/tasks/{task['id']}", {"due_at": "2030-01-04T08:00:00Z", "version": 1})
    history = new.get(f"/api/v1/tasks/{task['id']}/history")["results"]
    assert [e["changes"].get("due_at") for e in history] == [
        [None, "2030-01-02T10:00:00+00:00"],
        ["2030-01-02T10:00:00+00:00", "2030-01-04T08:00:00+00:00"],
    ]
    assert all("due_date" not in e["changes"] for e in history)
    old_history = old.get(f"/api/v1/tasks/{task['id']}/history")["results"]
    assert [e["changes"].get("due_date") for e in old_history] == [
        [None, "2030-01-02"],
        ["2030-01-02", "2030-01-04"],
    ]
    assert all("due_at" not in e["changes"] for e in old_history)


@pytest.fixture
def contracted(committed: None) -> Iterator[TenantFixture]:
    """A schema tenant its evolution's contract reached: no `due_date` any more."""
    fixture = provisioned_tenant(Isolation.SCHEMA)
    assert migrate_schema(fixture.tenant.schema_name, revision="0007c").ok
    yield fixture
    discard(fixture)


def test_after_the_contract_every_version_still_reads_and_writes_due(
    contracted: TenantFixture, switched: None
) -> None:
    new, old = Client(contracted.api("member")), Client(contracted.api("member"), OLD)
    project = project_of(new)
    task = new.post(
        "/api/v1/tasks", {"project_id": project, "title": "a", "due_at": "2030-01-02T10:00:00Z"}
    )
    assert stored(contracted, task["id"]) == {"due_at": "2030-01-02T10:00:00+00:00"}
    other = old.post(
        "/api/v1/tasks", {"project_id": project, "title": "b", "due_date": "2030-01-01"}
    )
    assert other["due_date"] == "2030-01-01"
    old.patch(f"/api/v1/tasks/{other['id']}", {"due_date": "2030-01-03", "version": 1})
    assert _titles(new.get("/api/v1/tasks", sort="due_at", project=project)) == ["a", "b"]
    assert _titles(old.get("/api/v1/tasks", sort="-due_date", due_after="2030-01-01",
                           project=project)) == ["b", "a"]  # fmt: skip
    history = old.get(f"/api/v1/tasks/{other['id']}/history")["results"]
    assert history[-1]["changes"]["due_date"] == ["2030-01-01", "2030-01-03"]
    deleted = contracted.api("admin").delete(f"/api/v1/tasks/{task['id']}", {"version": 1})
    assert deleted.status_code == 204


@pytest.fixture
def not_expanded(committed: None) -> Iterator[TenantFixture]:
    """A schema tenant the expand has not reached yet (or rolled back): no `due_at`."""
    fixture = provisioned_tenant(Isolation.SCHEMA)
    assert migrate_schema(fixture.tenant.schema_name, revision="0006").ok
    yield fixture
    discard(fixture)


def test_before_the_expand_the_release_reads_and_writes_due_date_only(
    not_expanded: TenantFixture, switch_back: None
) -> None:
    set_switch(None)
    new, old = Client(not_expanded.api("member")), Client(not_expanded.api("member"), OLD)
    project = project_of(new)
    task = new.post(
        "/api/v1/tasks", {"project_id": project, "title": "a", "due_at": "2030-01-02T10:00:00Z"}
    )
    assert task["due_at"] == "2030-01-02T00:00:00Z"
    assert stored(not_expanded, task["id"]) == {"due_date": "2030-01-02"}
    old.patch(f"/api/v1/tasks/{task['id']}", {"due_date": "2030-01-03", "version": 1})
    assert _titles(new.get("/api/v1/tasks", sort="-due_at", project=project)) == ["a"]
    assert new.get(f"/api/v1/tasks/{task['id']}/history")["results"][-1]["changes"]["due_at"] == [
        "2030-01-02T00:00:00+00:00", "2030-01-03T00:00:00+00:00"
    ]  # fmt: skip

"""Isolation under random use: several tenants in both modes drive the API at random, and each
only ever sees and changes its own rows (a hypothesis state machine).

    HYPOTHESIS_ISOLATION_STEPS=10000 platform/dev.sh pytest tests/taskflow/test_isolation.py \
        tests/tenants/test_pgbouncer.py -k isolation

runs the long profile (10,000 operations or more, directly and again through PgBouncer with
Django's connection and the TaskFlow engine both pooled); the default run does a few hundred.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
import sqlalchemy as sa
from django.test import Client
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from taskflow.models import Task
from tenants.binding import TenantBinding, binding_for, tenant_session
from tenants.database_roles import owner_connection
from tenants.models import Isolation
from tests.taskflow.conftest import TenantFixture, discard, provisioned_tenant

STEPS = int(os.environ.get("HYPOTHESIS_ISOLATION_STEPS", "300"))
STEPS_PER_RUN = 50
# Operations the machine ran (rules), for the long profile's report.
OPERATIONS = {"count": 0}


MODES = (Isolation.SCHEMA, Isolation.SCHEMA, Isolation.RLS, Isolation.RLS)


class Isolated(RuleBasedStateMachine):
    """The model: which task ids (with their titles) each tenant owns and has not deleted.

    Every example starts with new tenants (two in each mode unless `modes` says otherwise), so
    the model starts empty and exact.
    """

    modes: tuple[str, ...] = MODES
    # Run on the new tenants before any operation (a test that weakens them on purpose).
    after_provisioning: Callable[[list[TenantFixture]], None] | None = None

    def __init__(self) -> None:
        super().__init__()
        self.fixtures = [provisioned_tenant(mode) for mode in self.modes]
        if self.after_provisioning is not None:
            type(self).after_provisioning(self.fixtures)  # type: ignore[misc]
        self.clients = [
            Client(HTTP_HOST=f.host, headers={"Authorization": f"Bearer {f.tokens['admin']}"})
            for f in self.fixtures
        ]
        self.projects: list[int] = []
        self.live: list[dict[int, str]] = [{} for _ in self.fixtures]
        self.deleted: list[set[int]] = [set() for _ in self.fixtures]
        self.counter = 0
        self.run = uuid.uuid4().hex[:8]

    @initialize()
    def make_projects(self) -> None:
        for index, client in enumerate(self.clients):
            self.counter += 1
            body = {"key": f"I{self.run}{self.counter}", "name": f"iso {index}"}
            response = client.post("/api/v1/projects", body, content_type="application/json")
            assert response.status_code == 201, response.content
            self.projects.append(response.json()["id"])

    def step(self) -> None:
        OPERATIONS["count"] += 1

    def teardown(self) -> None:
        for fixture in self.fixtures:
            discard(fixture)

    def title(self, index: int) -> str:
        self.counter += 1
        return f"tenant{index}-{self.run}-task{self.counter}"

    def list_all(self, index: int) -> dict[int, str]:
        seen: dict[int, str] = {}
        url: str | None = "/api/v1/tasks?limit=37&sort=-priority,title"
        while url:
            body = self.clients[index].get(url).json()
            for task in body["results"]:
                assert task["id"] not in seen, "a row was repeated across pages"
                seen[task["id"]] = task["title"]
            url = body["next"]
        return seen

    def all_ids(self) -> list[int]:
        return sorted(
            {i for live in self.live for i in live} | {i for dead in self.deleted for i in dead}
        )

    @rule(tenant=st.integers(0, len(MODES) - 1), priority=st.integers(0, 4))
    def create(self, tenant: int, priority: int) -> None:
        self.step()
        title = self.title(tenant)
        body = {"project_id": self.projects[tenant], "title": title, "priority": priority}
        response = self.clients[tenant].post("/api/v1/tasks", body, content_type="application/json")
        assert response.status_code == 201, response.content
        self.live[tenant][response.json()["id"]] = title

    @rule(tenant=st.integers(0, len(MODES) - 1), project_of=st.integers(0, len(MODES) - 1))
    def create_in_a_guessed_project(self, tenant: int, project_of: int) -> None:
        """A project id of another tenant must not take a task (in rls mode the id is real)."""
        self.step()
        title = self.title(tenant)
        body = {"project_id": self.projects[project_of], "title": title}
        response = self.clients[tenant].post("/api/v1/tasks", body, content_type="application/json")
        if project_of == tenant:
            assert response.status_code == 201
            self.live[tenant][response.json()["id"]] = title
        elif response.status_code == 201:
            # Schema-mode ids repeat across schemas: the project it landed in must be its own.
            assert response.json()["project_id"] in self.own_project_ids(tenant)
            self.live[tenant][response.json()["id"]] = title
        else:
            assert response.status_code == 400

    def own_project_ids(self, tenant: int) -> set[int]:
        return {
            p["id"]
            for p in self.clients[tenant].get("/api/v1/projects?limit=200").json()["results"]
        }

    @rule(tenant=st.integers(0, len(MODES) - 1), pick=st.integers(0, 10_000))
    def get_guessed(self, tenant: int, pick: int) -> None:
        self.step()
        ids = self.all_ids()
        if not ids:
            return
        task_id = ids[pick % len(ids)]
        response = self.clients[tenant].get(f"/api/v1/tasks/{task_id}")
        if task_id in self.live[tenant]:
            assert response.status_code == 200
            assert response.json()["title"] == self.live[tenant][task_id]
        else:
            assert response.status_code == 404, (tenant, task_id, response.content)

    @rule(tenant=st.integers(0, len(MODES) - 1), pick=st.integers(0, 10_000))
    def patch_guessed(self, tenant: int, pick: int) -> None:
        self.step()
        ids = self.all_ids()
        if not ids:
            return
        task_id = ids[pick % len(ids)]
        title = self.title(tenant)
        response = self.clients[tenant].patch(
            f"/api/v1/tasks/{task_id}",
            {"title": title},
            content_type="application/json",
            headers={"If-Match": "*"},
        )
        if task_id in self.live[tenant]:
            assert response.status_code == 200
            self.live[tenant][task_id] = title
        else:
            assert response.status_code == 404, (tenant, task_id, response.content)

    @rule(tenant=st.integers(0, len(MODES) - 1), pick=st.integers(0, 10_000))
    def delete_guessed(self, tenant: int, pick: int) -> None:
        self.step()
        ids = self.all_ids()
        if not ids:
            return
        task_id = ids[pick % len(ids)]
        response = self.clients[tenant].delete(
            f"/api/v1/tasks/{task_id}", headers={"If-Match": "*"}
        )
        if task_id in self.live[tenant]:
            assert response.status_code == 204
            del self.live[tenant][task_id]
            self.deleted[tenant].add(task_id)
        else:
            assert response.status_code == 404, (tenant, task_id, response.content)

    @rule(tenant=st.integers(0, len(MODES) - 1), pick=st.integers(0, 10_000))
    def history_guessed(self, tenant: int, pick: int) -> None:
        self.step()
        ids = self.all_ids()
        if not ids:
            return
        task_id = ids[pick % len(ids)]
        response = self.clients[tenant].get(f"/api/v1/tasks/{task_id}/history")
        mine = task_id in self.live[tenant] or task_id in self.deleted[tenant]
        if mine:
            assert response.status_code == 200
        elif response.status_code == 200:
            pytest.fail(f"tenant {tenant} read the history of task {task_id} it never had")

    @rule(tenant=st.integers(0, len(MODES) - 1))
    def list_with_cursors(self, tenant: int) -> None:
        self.step()
        assert self.list_all(tenant) == self.live[tenant]

    @rule(tenant=st.integers(0, len(MODES) - 1))
    def unfiltered_read_through_a_bound_session(self, tenant: int) -> None:
        """Code that forgets `WHERE tenant_id = ...` still sees only its tenant: the placement
        (own schema) or row-level security (shared schema) is what stops it."""
        self.step()
        fixture = self.fixtures[tenant]
        with tenant_session(binding_for(fixture.tenant)) as session:
            owners = set(session.scalars(sa.select(Task.tenant_id).distinct()))
        assert owners <= {fixture.tenant.pk}, f"tenant {tenant} read rows of tenants {owners}"

    @rule(tenant=st.integers(0, len(MODES) - 1), other=st.integers(0, len(MODES) - 1))
    def read_and_write_the_wrong_schema(self, tenant: int, other: int) -> None:
        """A bug that names another tenant's placement (its schema, or `shared`) with this
        tenant's identity reads nothing and changes nothing there: the forced policies of every
        placement stop it (revision 0004)."""
        self.step()
        mine, theirs = (
            binding_for(self.fixtures[tenant].tenant),
            binding_for(self.fixtures[other].tenant),
        )
        if mine.schema == theirs.schema:
            return
        wrong = TenantBinding(tenant_id=mine.tenant_id, schema=theirs.schema)
        with tenant_session(wrong) as session:
            owners = set(session.scalars(sa.select(Task.tenant_id).distinct()))
            assert owners <= {mine.tenant_id}, f"tenant {tenant} read rows of tenants {owners}"
            changed = session.execute(
                sa.update(Task).where(Task.tenant_id != mine.tenant_id).values(title=Task.title)
            ).rowcount  # type: ignore[attr-defined]
            session.rollback()
        assert changed == 0, f"tenant {tenant} changed {changed} rows of another tenant"

    @invariant()
    def titles_never_leak(self) -> None:
        for index, live in enumerate(self.live):
            others = [
                t
                for other, titles in enumerate(self.live)
                if other != index
                for t in titles.values()
            ]
            assert not set(live.values()) & set(others)


def run_isolation_machine(
    steps: int,
    modes: tuple[str, ...] = MODES,
    *,
    shrink: bool = True,
    after_provisioning: Callable[[list[TenantFixture]], None] | None = None,
) -> None:
    Isolated.modes = modes
    Isolated.after_provisioning = after_provisioning
    phases = list(Phase) if shrink else [Phase.generate]
    before = OPERATIONS["count"]
    # An example may end before STEPS_PER_RUN steps: run more until `steps` operations ran.
    while (done := OPERATIONS["count"] - before) < steps:
        run_state_machine_as_test(
            Isolated,
            settings=settings(
                max_examples=max(1, (steps - done) // STEPS_PER_RUN),
                stateful_step_count=STEPS_PER_RUN,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                phases=phases,
            ),
        )
    print(f"isolation machine: {done} operations by tenants in modes {', '.join(modes)}, 0 leaks")


def test_each_tenant_only_ever_sees_and_changes_its_own_rows(committed) -> None:
    run_isolation_machine(STEPS)


@contextmanager
def select_policy_disabled(table: str = "tasks") -> Iterator[None]:
    """Replace one table's SELECT policy with one that lets every row through (committed, since
    requests use other connections), and put it back whatever happens."""
    with owner_connection() as conn:
        conn.execute(f"ALTER POLICY tenant_select ON shared.{table} USING (true)")
    try:
        yield
    finally:
        with owner_connection() as conn:
            conn.execute(
                f"ALTER POLICY tenant_select ON shared.{table}"
                " USING (tenant_id = nullif(current_setting('app.tenant_id', true), '')::bigint)"
            )


def test_the_isolation_test_fails_when_one_policy_is_disabled(committed) -> None:
    with select_policy_disabled(), pytest.raises(AssertionError, match="read rows of tenants"):
        run_isolation_machine(
            1000, (Isolation.RLS, Isolation.RLS, Isolation.RLS, Isolation.RLS), shrink=False
        )


def drop_tenant_schema_policies(fixtures: list[TenantFixture]) -> None:
    """Undo revision 0004 on the tasks table of every schema-mode tenant: no policies, RLS off."""
    with owner_connection() as conn:
        for fixture in fixtures:
            if fixture.tenant.isolation != Isolation.SCHEMA:
                continue
            table = f'"{fixture.tenant.schema_name}".tasks'
            for name in ("tenant_select", "tenant_insert", "tenant_update", "tenant_delete"):
                conn.execute(f"DROP POLICY {name} ON {table}")
            conn.execute(f"ALTER TABLE {table} NO FORCE ROW LEVEL SECURITY")
            conn.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")


def test_the_isolation_test_fails_when_a_tenant_schemas_policies_are_dropped(committed) -> None:
    with pytest.raises(AssertionError, match=r"read rows of tenants|changed \d+ rows of another"):
        run_isolation_machine(
            1000,
            (Isolation.SCHEMA, Isolation.SCHEMA, Isolation.SCHEMA, Isolation.RLS),
            shrink=False,
            after_provisioning=drop_tenant_schema_policies,
        )

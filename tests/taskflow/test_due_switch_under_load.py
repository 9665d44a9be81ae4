"""Proof under load: the `tasks.due` switch flips and the contract drops `due_date` while clients
of the newest and of an older API version write and read through two web processes, one still
running the old code path (pinned to `due_date`), as in a rolling deploy.

The switch is flipped as the evolution's switch phase does (tenants.switches.set_value), the
contract applied to the tenant's schema as each of the contract phase's fan-out steps does
(migrations_sqla.migrator.migrate_schema to 0007c), after the old process stopped (the contract
gate's condition). No response is a 5xx or a 4xx; every acknowledged write is in the database
afterwards with the due day it was written with.
"""

from __future__ import annotations

import http.client
import os
import random
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from migrations_sqla.migrator import migrate_schema
from taskflow import due
from tenants.database_roles import owner_connection
from tenants.models import Isolation
from tests.conftest import ROOT
from tests.processes import free_port, request_json, stop_process
from tests.taskflow.conftest import TenantFixture, discard, provisioned_tenant, set_due_switch

OLD_VERSION = "2026-12-01"


@dataclass
class Web:
    name: str
    port: int
    process: subprocess.Popen[bytes]
    log: Path
    in_rotation: bool = True  # the load balancer sends it requests

    def request(
        self, method: str, path: str, host: str, body: Any = None, **headers: str
    ) -> tuple[int, Any]:
        return request_json(self.port, method, path, host, body, headers)


def start_web(name: str, tmp: Path, settings_module: str) -> Web:
    port, log = free_port(), tmp / f"{name}.log"
    env = os.environ | {
        "DEBUG": "false", "PYTHONUNBUFFERED": "1", "DJANGO_SETTINGS_MODULE": settings_module
    }  # fmt: skip
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "control_plane.wsgi:application",
             "--bind", f"127.0.0.1:{port}", "--workers", "1", "--threads", "4",
             "--timeout", "120"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    web = Web(name, port, process, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited early:\n{log.read_text()}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return web
        except OSError:
            time.sleep(0.2)
    stop_process(process)
    raise RuntimeError(f"{name} did not answer within 60 s:\n{log.read_text()}")


@pytest.fixture
def webs(tmp_path: Path, committed: None) -> Iterator[dict[str, Web]]:
    """The new release and one process of the release before, both serving."""
    set_due_switch(None)
    started: dict[str, Web] = {}
    try:
        started["old"] = start_web("old", tmp_path, "tests.taskflow.old_release_settings")
        started["new"] = start_web("new", tmp_path, "control_plane.settings")
        yield started
    finally:
        for web in started.values():
            stop_process(web.process)
        set_due_switch(None)


@pytest.fixture
def load_tenant(committed: None) -> Iterator[TenantFixture]:
    fixture = provisioned_tenant(Isolation.SCHEMA)
    yield fixture
    discard(fixture)


@dataclass
class Outcome:
    statuses: dict[int, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    written: dict[int, str | None] = field(default_factory=dict)  # task id -> due day written
    by_process: dict[str, int] = field(default_factory=dict)
    requests: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, status: int, what: str, body: Any) -> None:
        with self.lock:
            self.requests += 1
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status >= 400:
                self.failures.append(f"{status} {what}: {body}")


def client_loop(
    name: str,
    version: str | None,
    tenant: TenantFixture,
    project: int,
    webs: dict[str, Web],
    stop: threading.Event,
    outcome: Outcome,
) -> None:
    """Create, patch, read and page tasks until told to stop, on whichever process serves."""
    rng = random.Random(name)
    headers = {"Authorization": f"Bearer {tenant.tokens['member']}"}
    if version:
        headers["TaskFlow-Version"] = version

    def call(method: str, path: str, body: Any = None, web: str | None = None) -> Any:
        live = [w for w in webs.values() if w.in_rotation]
        target = webs[web] if web is not None else rng.choice(live)
        status, payload = target.request(method, path, tenant.host, body, **headers)
        outcome.count(status, f"{target.name} {method} {path} {body}", payload)
        with outcome.lock:
            outcome.by_process[target.name] = outcome.by_process.get(target.name, 0) + 1
        return status, payload

    try:
        _drive(name, version, project, call, stop, outcome, rng)
    except Exception as exc:  # a dead client thread must fail the test, not thin the load
        with outcome.lock:
            outcome.failures.append(f"{name}: {exc!r}")


def _drive(
    name: str,
    version: str | None,
    project: int,
    call: Any,
    stop: threading.Event,
    outcome: Outcome,
    rng: random.Random,
) -> None:
    field_name, sort = ("due_date", "due_date") if version else ("due_at", "due_at")
    mine: list[tuple[int, int]] = []  # (id, version)

    i = 0
    while not stop.is_set():
        i += 1
        day = f"2030-0{1 + i % 9}-{10 + i % 18}"
        value = day if version or i % 2 else f"{day}T{i % 24:02d}:15:00Z"
        status, task = call("POST", "/api/v1/tasks",
                            {"project_id": project, "title": f"{name}-{i}", field_name: value})  # fmt: skip
        if status == 201:
            with outcome.lock:
                outcome.written[task["id"]] = day
            mine.append((task["id"], task["version"]))
        if mine and i % 3 == 0:
            index = rng.randrange(len(mine))
            task_id, seen = mine[index]
            day = f"2031-0{1 + i % 9}-{10 + i % 18}"
            status, task = call("PATCH", f"/api/v1/tasks/{task_id}",
                                {field_name: day, "version": seen})  # fmt: skip
            if status == 200:
                with outcome.lock:
                    outcome.written[task_id] = day
                mine[index] = (task_id, task["version"])
        if i % 4 == 0:
            status, page = call("GET", f"/api/v1/tasks?sort=-priority,{sort}&limit=5")
            # The next page from the new release: a cursor of the old order pages on there.
            if status == 200 and page["next"]:
                path = page["next"].split("://", 1)[1].split("/", 1)[1]
                call("GET", "/" + path, web="new")
            call("GET", f"/api/v1/tasks?due_after=2030-03-01&sort={sort}&limit=5")


def stored_days(tenant: TenantFixture) -> dict[int, str | None]:
    with owner_connection() as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant.tenant.pk),))
        rows = conn.execute(
            f"SELECT id, (due_at AT TIME ZONE 'UTC')::date FROM \"{tenant.tenant.schema_name}\".tasks"
        ).fetchall()
    return {row[0]: None if row[1] is None else row[1].isoformat() for row in rows}


def test_switch_and_contract_under_load_fail_no_request_and_lose_no_write(
    webs: dict[str, Web], load_tenant: TenantFixture
) -> None:
    admin = {"Authorization": f"Bearer {load_tenant.tokens['admin']}"}
    status, project = webs["new"].request(
        "POST", "/api/v1/projects", load_tenant.host, {"key": "LOAD", "name": "load"}, **admin
    )
    assert status == 201, project
    stop, outcome = threading.Event(), Outcome()
    clients = [
        threading.Thread(
            target=client_loop,
            args=(
                f"c{n}-{uuid.uuid4().hex[:4]}",
                version,
                load_tenant,
                project["id"],
                webs,
                stop,
                outcome,
            ),
        )
        for n, version in enumerate([None, None, OLD_VERSION, OLD_VERSION])
    ]
    for thread in clients:
        thread.start()
    try:
        time.sleep(2)
        set_due_switch(due.DUE_AT)  # the switch phase's flip: processes see it within a second
        time.sleep(2)
        # The rolling deploy finishes: out of rotation, its requests in flight answered, stopped.
        webs["old"].in_rotation = False
        time.sleep(1)
        stop_process(webs["old"].process)
        contracted = migrate_schema(load_tenant.tenant.schema_name, revision="0007c")
        assert contracted.ok, contracted.error
        time.sleep(2)
    finally:
        stop.set()
        for thread in clients:
            thread.join(timeout=120)
    print(f"requests by process: {outcome.by_process}; statuses: {outcome.statuses}")
    assert outcome.failures == [], outcome.failures[:5]
    assert outcome.requests > 50, outcome.statuses
    stored = stored_days(load_tenant)
    lost = {k: v for k, v in outcome.written.items() if stored.get(k, "missing") != v}
    assert lost == {}, f"acknowledged writes not as written: {list(lost.items())[:5]}"

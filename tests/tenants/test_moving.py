"""Moving a tenant between its own schema and the shared RLS schema, and back."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator

import pytest

from control_plane.tenancy.models import MoveStatus, TenantMove
from tenants.binding import WRITE_LOCK_SPACE
from tenants.citus import is_citus
from tenants.database_roles import owner_connection
from tenants.distribution import CITUS_HISTORY_FUNCTION_NAME
from tenants.local_settings import bind_tenant
from tenants.models import Isolation, Tenant
from tenants.moving import MoveRefused, move_tenant, placement, schema_node
from tenants.row_security import restore_forced_row_security
from tests.factories import schema_exists
from tests.processes import ROOT
from tests.taskflow.conftest import Api, TenantFixture, discard, new_key, provisioned_tenant


@pytest.fixture(params=[Isolation.SCHEMA, Isolation.RLS], ids=["from-schema", "from-rls"])
def mover(request, committed) -> Iterator[TenantFixture]:
    fixture = provisioned_tenant(request.param)
    yield fixture
    discard(fixture)


def seed(api: Api) -> dict:
    """A project, tasks, a comment, a soft delete and some history."""
    project = api.post("/api/v1/projects", {"key": new_key(), "name": "Moving"}).json()
    tasks = [
        api.post("/api/v1/tasks", {"project_id": project["id"], "title": f"t{i}"}).json()
        for i in range(5)
    ]
    api.patch(f"/api/v1/tasks/{tasks[0]['id']}", {"title": "renamed", "version": 1})
    api.delete(f"/api/v1/tasks/{tasks[1]['id']}", {"version": 1})
    api.post(f"/api/v1/tasks/{tasks[2]['id']}/comments", {"body": "hello"})
    return {"project": project, "tasks": tasks}


def snapshot(api: Api, task_ids: list[int]) -> dict:
    return {
        "tasks": api.get("/api/v1/tasks", include_deleted="true", limit=200).json()["results"],
        "history": {i: api.get(f"/api/v1/tasks/{i}/history").json()["results"] for i in task_ids},
        "comments": api.get(f"/api/v1/tasks/{task_ids[2]}/comments").json()["results"],
    }


def titles(api: Api) -> dict[int, str]:
    """Every task of the tenant (soft-deleted ones too) by id, as the API lists them."""
    listed = api.get("/api/v1/tasks", include_deleted="true", limit=200).json()["results"]
    return {t["id"]: t["title"] for t in listed}


def shared_rows(tenant_id: int) -> int:
    with owner_connection() as conn, conn.transaction():
        conn.execute(bind_tenant(tenant_id))  # SET LOCAL: it reaches Citus workers too
        row = conn.execute(
            "SELECT count(*) FROM shared.tasks WHERE tenant_id = %s", (tenant_id,)
        ).fetchone()
        return int(row[0]) if row else 0


def test_move_keeps_every_row_id_and_history_and_serves_from_the_target(
    mover: TenantFixture,
) -> None:
    api = mover.api("admin")
    seeded = seed(api)
    task_ids = [t["id"] for t in seeded["tasks"]]
    before = snapshot(api, task_ids)
    source_mode = mover.tenant.isolation
    target_mode = Isolation.RLS if source_mode == Isolation.SCHEMA else Isolation.SCHEMA

    report = move_tenant(mover.tenant, target_mode)

    assert report.source_removed
    assert report.rows["tasks"] == 5
    assert Tenant.objects.get(pk=mover.tenant.pk).isolation == target_mode
    assert snapshot(api, task_ids) == before  # same rows, same ids, history not rewritten
    if target_mode == Isolation.RLS:
        assert not schema_exists(mover.tenant.schema_name)
        assert shared_rows(mover.tenant.pk) == 5
    else:
        assert schema_exists(mover.tenant.schema_name)
        assert shared_rows(mover.tenant.pk) == 0
    # The target takes writes, and they make history again.
    patched = api.patch(f"/api/v1/tasks/{task_ids[3]}", {"title": "after the move", "version": 1})
    assert patched.status_code == 200
    history = api.get(f"/api/v1/tasks/{task_ids[3]}/history").json()["results"]
    assert [h["operation"] for h in history] == ["insert", "update"]


def history_draws_ids(schema: str) -> bool:
    """Whether a task's history entry in `schema` takes an id from the tenant's sequence (not
    when its trigger calls the Citus history function: tenants.distribution)."""
    with owner_connection() as conn:
        row = conn.execute(
            "SELECT tgfoid::regproc::text FROM pg_trigger WHERE tgname = 'tasks_history_insert'"
            " AND tgrelid = format('%%I.tasks', %s::text)::regclass",
            (schema,),
        ).fetchone()
    assert row is not None
    return str(row[0]).rpartition(".")[2] != CITUS_HISTORY_FUNCTION_NAME


def test_a_move_keeps_ids_and_later_creates_continue_without_collision(
    mover: TenantFixture, committed
) -> None:
    """Ids belong to the tenant, not to a placement: moved rows keep theirs, the next create
    continues after the tenant's last id, and a neighbour in the shared schema holding the same
    ids (rls tenants' ids repeat across tenants) keeps its rows apart."""
    neighbour = provisioned_tenant(Isolation.RLS)
    try:
        api, other = mover.api("admin"), neighbour.api("admin")
        seeded = seed(api)
        task_ids = [t["id"] for t in seeded["tasks"]]
        other_project = other.post("/api/v1/projects", {"key": new_key(), "name": "N"}).json()
        other_tasks = [
            other.post("/api/v1/tasks", {"project_id": other_project["id"], "title": f"n{i}"})
            for i in range(12)
        ]
        other_ids = [r.json()["id"] for r in other_tasks]
        assert set(task_ids) & set(other_ids)  # both tenants hold the same ids
        last = max(h["id"] for h in snapshot(api, task_ids)["history"][task_ids[2]])
        kept = titles(api)  # the tenant's tasks before the first move
        assert sorted(kept) == sorted(task_ids)
        source_mode = mover.tenant.isolation
        previous = None
        drew = True

        for target_mode in (other_mode(source_mode), source_mode):  # there and back again
            move_tenant(mover.tenant, target_mode)
            mover.tenant.refresh_from_db()
            created = api.post(
                "/api/v1/tasks", {"project_id": seeded["project"]["id"], "title": target_mode}
            )
            assert created.status_code == 201, created.content
            assert created.json()["id"] > last  # continues, never reuses
            if previous is not None:  # and advances only with the tenant's own writes: the
                # create, and its history entry where history draws ids from the tenant's
                # sequence (on Citus the history function numbers a row's entries itself)
                assert created.json()["id"] == previous + (2 if drew else 1)
            previous = created.json()["id"]
            drew = history_draws_ids(placement(mover.tenant))
            kept[previous] = target_mode
            assert titles(api) == kept  # every moved row under its own id, and the new one
            assert api.get(f"/api/v1/tasks/{task_ids[0]}").json()["title"] == "renamed"

        listed = other.get("/api/v1/tasks", limit=200).json()["results"]
        assert sorted(t["id"] for t in listed) == sorted(other_ids)
        assert {t["title"] for t in listed} == {f"n{i}" for i in range(12)}
    finally:
        discard(neighbour)


def assert_still_on_source(
    mover: TenantFixture, source_mode: str, before: dict, task_ids: list[int]
) -> None:
    mover.tenant.refresh_from_db()
    assert mover.tenant.isolation == source_mode
    assert snapshot(mover.api("admin"), task_ids) == before
    if source_mode == Isolation.SCHEMA:
        assert shared_rows(mover.tenant.pk) == 0
    else:
        assert not schema_exists(mover.tenant.schema_name)


def other_mode(mode: str) -> str:
    return Isolation.RLS if mode == Isolation.SCHEMA else Isolation.SCHEMA


def test_a_move_that_fails_while_copying_leaves_the_tenant_on_its_source(committed) -> None:
    mover = provisioned_tenant(Isolation.SCHEMA)
    api = mover.api("admin")
    task_ids = [t["id"] for t in seed(api)["tasks"]]
    before = snapshot(api, task_ids)
    # The shared comments table refuses one of the rows (say, a bad migration): the copy fails
    # after projects and tasks were already copied in the same transaction.
    with owner_connection() as conn:
        conn.execute(
            "ALTER TABLE shared.comments ADD CONSTRAINT no_hello CHECK (body <> 'hello') NOT VALID"
        )
    try:
        with pytest.raises(Exception, match="no_hello"):
            move_tenant(mover.tenant, Isolation.RLS)
    finally:
        with owner_connection() as conn:
            conn.execute("ALTER TABLE shared.comments DROP CONSTRAINT no_hello")
    assert_still_on_source(mover, Isolation.SCHEMA, before, task_ids)
    discard(mover)


def allow_triggers_on_citus(conn) -> None:
    """On Citus shared.comments is distributed: triggers are refused unless allowed, and a
    function's DDL after the trigger's must go over one connection per node."""
    if is_citus(conn):
        conn.execute("SET LOCAL citus.enable_unsafe_triggers = on")
        conn.execute("SET LOCAL citus.multi_shard_modify_mode = 'sequential'")


def test_a_move_whose_target_loses_a_row_is_refused_and_leaves_the_tenant_on_its_source(
    committed,
) -> None:
    """A count mismatch (here a trigger on the target silently drops one comment, as a
    placement that does not see the tenant's rows would drop them all) stops the switch."""
    mover = provisioned_tenant(Isolation.SCHEMA)
    api = mover.api("admin")
    task_ids = [t["id"] for t in seed(api)["tasks"]]
    before = snapshot(api, task_ids)
    with owner_connection() as conn:
        allow_triggers_on_citus(conn)
        conn.execute(
            "CREATE FUNCTION public.test_drop_row() RETURNS trigger LANGUAGE plpgsql"
            " AS 'BEGIN RETURN NULL; END'"
        )
        conn.execute(
            "CREATE TRIGGER drop_hello BEFORE INSERT ON shared.comments FOR EACH ROW"
            " WHEN (NEW.body = 'hello') EXECUTE FUNCTION public.test_drop_row()"
        )
    try:
        # Refused by the copy's own counts, or (on Citus, whose INSERT into the shards reports
        # the rows it sent) by the target's count and checksum.
        with pytest.raises(MoveRefused, match=r"comments: .*rows.* nothing was switched"):
            move_tenant(mover.tenant, Isolation.RLS)
    finally:
        with owner_connection() as conn:
            allow_triggers_on_citus(conn)
            conn.execute("DROP TRIGGER drop_hello ON shared.comments")
            conn.execute("DROP FUNCTION public.test_drop_row()")
    assert_still_on_source(mover, Isolation.SCHEMA, before, task_ids)
    assert shared_rows(mover.tenant.pk) == 0  # the copied tasks went with the refused switch
    discard(mover)


def test_a_move_that_cannot_lock_out_writers_leaves_the_tenant_on_its_source(
    mover: TenantFixture, settings
) -> None:
    api = mover.api("admin")
    task_ids = [t["id"] for t in seed(api)["tasks"]]
    before = snapshot(api, task_ids)
    source_mode = mover.tenant.isolation
    settings.TENANT_MOVE_LOCK_TIMEOUT_MS = 300
    release, held = threading.Event(), threading.Event()

    def long_write() -> None:
        with owner_connection() as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock_shared(%s, %s)", (WRITE_LOCK_SPACE, mover.tenant.pk)
            )
            held.set()
            release.wait(30)

    writer = threading.Thread(target=long_write)
    writer.start()
    held.wait(10)
    try:
        with pytest.raises(Exception, match="lock timeout"):
            move_tenant(mover.tenant, other_mode(source_mode))
    finally:
        release.set()
        writer.join()
    assert_still_on_source(mover, source_mode, before, task_ids)


def test_moving_to_the_current_mode_is_refused(mover: TenantFixture) -> None:
    with pytest.raises(MoveRefused):
        move_tenant(mover.tenant, mover.tenant.isolation)


@pytest.fixture
def write_lock_held(mover: TenantFixture) -> Iterator[threading.Event]:
    """Hold the tenant's write lock exclusively, as a move does, until the event is set."""
    release, held = threading.Event(), threading.Event()

    def hold() -> None:
        with owner_connection() as conn, conn.transaction():
            conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", (WRITE_LOCK_SPACE, mover.tenant.pk)
            )
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    held.wait(10)
    yield release
    release.set()
    thread.join()


def test_during_a_move_reads_go_on_and_writes_wait(
    mover: TenantFixture, write_lock_held, settings
) -> None:
    api = mover.api("admin")
    task_id = api.get("/api/v1/tasks").json()["results"]
    # A read never takes the write lock: it is served while the lock is held (a read that
    # waited for it would get the 503 below once the lock timeout passed).
    assert api.get("/api/v1/projects").status_code == 200
    settings.TENANT_WRITE_LOCK_TIMEOUT_MS = 300
    refused = api.post("/api/v1/projects", {"key": new_key(), "name": "blocked"})
    assert refused.status_code == 503
    assert refused["Retry-After"] == "2"
    settings.TENANT_WRITE_LOCK_TIMEOUT_MS = 5000
    statuses: list[int] = []
    writer = threading.Thread(
        target=lambda: statuses.append(
            mover.api("admin")
            .post("/api/v1/projects", {"key": new_key(), "name": "waits"})
            .status_code
        )
    )
    writer.start()
    time.sleep(0.5)
    assert statuses == []  # still waiting for the move
    write_lock_held.set()
    writer.join(10)
    assert statuses == [201]
    assert task_id == []


@pytest.mark.worker
def test_the_admin_action_moves_a_tenant_in_a_worker(
    mover: TenantFixture, celery_worker_process
) -> None:
    from django.contrib.auth.models import User
    from django.test import Client
    from django.urls import reverse

    api = mover.api("admin")
    task_ids = [t["id"] for t in seed(api)["tasks"]]
    before = snapshot(api, task_ids)
    target = other_mode(mover.tenant.isolation)
    operator = Client()
    operator.force_login(
        User.objects.create_superuser(f"mover-{mover.tenant.slug}", "m@example.com", "x")
    )
    action = "move_to_rls" if target == Isolation.RLS else "move_to_schema"
    response = operator.post(
        reverse("admin:tenants_tenant_changelist", urlconf="control_plane.urls_public"),
        {"action": action, "_selected_action": [str(mover.tenant.pk)]},
        HTTP_HOST="localhost",
        follow=True,
    )
    assert "queued to move" in response.content.decode()
    deadline = time.monotonic() + 30
    while (
        Tenant.objects.get(pk=mover.tenant.pk).isolation != target and time.monotonic() < deadline
    ):
        time.sleep(0.1)
    assert Tenant.objects.get(pk=mover.tenant.pk).isolation == target
    assert snapshot(api, task_ids) == before
    # The move is a record: done, with its rows, who asked, and on the tenant's page.
    move = TenantMove.objects.get(tenant=mover.tenant)
    deadline = time.monotonic() + 10
    while move.status != MoveStatus.DONE and time.monotonic() < deadline:
        time.sleep(0.1)
        move.refresh_from_db()
    assert (move.status, move.source, move.target) == ("done", mover.tenant.isolation, target)
    assert move.rows["tasks"] == 5
    assert move.requested_by is not None
    page = operator.get(
        reverse(
            "admin:tenants_tenant_change",
            args=[mover.tenant.pk],
            urlconf="control_plane.urls_public",
        ),
        HTTP_HOST="localhost",
    ).content.decode()
    assert 'id="tenant-moves"' in page
    assert "move-status--done" in page


def test_move_tenant_command_reports_and_refuses_clearly(mover: TenantFixture) -> None:
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]

    def manage(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=root,
            env=os.environ.copy(),
            capture_output=True,
            text=True,
        )

    seed(mover.api("admin"))
    target = other_mode(mover.tenant.isolation)
    done = manage("move_tenant", mover.tenant.slug, "--to", target)
    assert done.returncode == 0, done.stderr
    assert f"moved {mover.tenant.slug}" in done.stdout
    assert "tasks 5" in done.stdout
    again = manage("move_tenant", mover.tenant.slug, "--to", target)
    assert again.returncode != 0
    assert f"already in {target} mode" in again.stderr
    assert "Traceback" not in again.stderr
    done_move, refused = TenantMove.objects.filter(tenant=mover.tenant).order_by("id")
    assert (done_move.status, done_move.requested_via, done_move.rows["tasks"]) == (
        "done",
        "cli",
        5,
    )
    assert (refused.status, refused.requested_via) == ("failed", "cli")
    assert f"already in {target} mode" in refused.error


@pytest.mark.postgresql_only
def test_moving_to_a_node_off_citus_is_refused_clearly_and_recorded(committed) -> None:
    """`--to-node` wraps citus_schema_move; on plain PostgreSQL (no distributed schema) it is
    refused in one line, the tenant untouched, and the refusal recorded."""
    from django.core.management import CommandError, call_command

    mover = provisioned_tenant(Isolation.SCHEMA)
    try:
        with pytest.raises(CommandError, match="takes HOST:PORT"):
            call_command("move_tenant", mover.tenant.slug, "--to-node", "nowhere")
        with pytest.raises(CommandError, match="is not a distributed schema on a Citus cluster"):
            call_command("move_tenant", mover.tenant.slug, "--to-node", "127.0.0.1:9701")
        (move,) = TenantMove.objects.filter(tenant=mover.tenant)
        assert (move.status, move.requested_via, move.source) == ("failed", "cli", "node")
        assert "not a distributed schema" in move.error
        assert schema_exists(mover.tenant.schema_name)
    finally:
        discard(mover)


def other_node(tenant: Tenant) -> tuple[str, int, tuple[str, int]]:
    """(host, port) of a worker that does not hold the tenant's schema, and where it is now."""
    with owner_connection() as conn:
        where = schema_node(conn, tenant.schema_name)
        assert where is not None, "the schema is not distributed (CITUS_DISTRIBUTE_SCHEMAS)"
        nodes = conn.execute(
            "SELECT nodename, nodeport FROM pg_dist_node WHERE shouldhaveshards AND isactive"
            " AND noderole = 'primary' ORDER BY nodeport"
        ).fetchall()
    (host, port), *_ = [(h, p) for h, p in nodes if (h, p) != where[1:]]
    return str(host), int(port), (where[1], where[2])


def forced_tables(schema: str) -> set[str]:
    """The tables of `schema` that force row-level security on their owner."""
    with owner_connection() as conn:
        rows = conn.execute(
            "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace"
            " AND relkind = 'r' AND relforcerowsecurity",
            (schema,),
        ).fetchall()
    return {str(row[0]) for row in rows}


@pytest.mark.citus
def test_moving_a_distributed_schema_with_rows_to_another_node_keeps_every_row(
    committed,
) -> None:
    """citus_schema_move copies as the tables' owner, whom forced row-level security shows no
    row: `--to-node` lets the copy see the rows under the write lock, checks counts and
    checksums of every table before and after, forces row-level security again, and the API
    serves the same tasks, history and comments from the other node."""
    from django.core.management import call_command

    mover = provisioned_tenant(Isolation.SCHEMA)
    try:
        api = mover.api("admin")
        seeded = seed(api)
        ids = [t["id"] for t in seeded["tasks"]]
        before = snapshot(api, ids)
        host, port, source = other_node(mover.tenant)
        forced_before = forced_tables(mover.tenant.schema_name)
        call_command("move_tenant", mover.tenant.slug, "--to-node", f"{host}:{port}")
        with owner_connection() as conn:
            where = schema_node(conn, mover.tenant.schema_name)
        assert where is not None
        assert where[1:] == (host, port) != source
        assert {"tasks", "tasks_history", "comments"} <= forced_before
        assert forced_tables(mover.tenant.schema_name) == forced_before
        assert snapshot(api, ids) == before
        created = api.post(
            "/api/v1/tasks", {"project_id": seeded["project"]["id"], "title": "after"}
        )
        assert created.status_code == 201, created.content
        (move,) = TenantMove.objects.filter(tenant=mover.tenant)
        assert move.status == MoveStatus.DONE
        assert (move.rows["tasks"], move.rows["comments"]) == (5, 1)
        assert move.rows["node"] == {"from": f"{source[0]}:{source[1]}", "to": f"{host}:{port}"}
    finally:
        discard(mover)


@pytest.mark.citus
def test_a_node_move_that_fails_forces_row_security_again_and_the_tenant_keeps_its_rows(
    committed,
) -> None:
    """citus_schema_move refuses a node that is not in the cluster after forcing was turned
    off for the copy: forcing comes back, the failure is recorded, and the API serves the same
    rows from where they were."""
    from django.core.management import CommandError, call_command

    mover = provisioned_tenant(Isolation.SCHEMA)
    try:
        api = mover.api("admin")
        ids = [t["id"] for t in seed(api)["tasks"]]
        before = snapshot(api, ids)
        _host, _port, source = other_node(mover.tenant)
        forced_before = forced_tables(mover.tenant.schema_name)
        with pytest.raises(CommandError, match="failed"):
            call_command("move_tenant", mover.tenant.slug, "--to-node", "127.0.0.1:1")
        assert forced_tables(mover.tenant.schema_name) == forced_before
        assert {"tasks", "comments"} <= forced_before
        with owner_connection() as conn:
            where = schema_node(conn, mover.tenant.schema_name)
        assert where is not None
        assert where[1:] == source
        assert snapshot(api, ids) == before
        (move,) = TenantMove.objects.filter(tenant=mover.tenant)
        assert move.status == MoveStatus.FAILED
    finally:
        discard(mover)


# `move_tenant --to-node` in a process of its own that stops inside the window where the
# schema's tables do not force row-level security (before the count that opens the copy) and
# says so: the test kills it there.
PAUSED_NODE_MOVE = """
import sys, time
import django
django.setup()
from django.core.management import call_command
from tenants import moving
counts = moving._row_counts
def paused(*args, **kwargs):
    print("forcing is off", flush=True)
    time.sleep(600)
    return counts(*args, **kwargs)
moving._row_counts = paused
call_command("move_tenant", sys.argv[1], "--to-node", sys.argv[2])
"""


def killed_inside_the_window(slug: str, node: str) -> None:
    """Start the paused move, wait for it to say forcing is off, SIGKILL it."""
    process = subprocess.Popen(
        [sys.executable, "-c", PAUSED_NODE_MOVE, slug, node],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    lines: list[str] = []
    try:
        assert process.stdout is not None
        for line in process.stdout:  # ends when the process does
            lines.append(line)
            if "forcing is off" in line:
                break
        assert "forcing is off" in (lines or [""])[-1], "".join(lines)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL


@pytest.mark.citus
def test_a_node_move_killed_while_forcing_is_off_is_repaired_and_the_next_move_works(
    committed,
) -> None:
    """A move process killed between turning forcing off and on leaves the schema's tables
    not forcing row-level security, and its record copying: the repair the next move and beat
    run forces them again once the dead process's move lock is gone, the tenant keeps every
    row where it was, and the next move records the dead one failed and goes through."""
    from django.core.management import call_command

    mover = provisioned_tenant(Isolation.SCHEMA)
    schema = mover.tenant.schema_name
    try:
        api = mover.api("admin")
        ids = [t["id"] for t in seed(api)["tasks"]]
        before = snapshot(api, ids)
        host, port, source = other_node(mover.tenant)
        forced_before = forced_tables(schema)
        assert {"tasks", "tasks_history", "comments"} <= forced_before
        killed_inside_the_window(mover.tenant.slug, f"{host}:{port}")
        assert forced_tables(schema) == set()
        (started,) = TenantMove.objects.filter(tenant=mover.tenant)
        assert (started.status, started.source) == (MoveStatus.COPYING, "node")
        restored: dict[str, list[str]] = {}
        with owner_connection(autocommit=True) as conn:
            for _ in range(100):  # until the dead process's backend has gone with its lock
                done = restore_forced_row_security(conn)
                restored |= done.restored
                if schema not in done.busy:
                    break
                time.sleep(0.2)
            where = schema_node(conn, schema)
        assert set(restored[schema]) == forced_before
        assert forced_tables(schema) == forced_before
        assert where is not None
        assert where[1:] == source
        assert snapshot(api, ids) == before
        call_command("move_tenant", mover.tenant.slug, "--to-node", f"{host}:{port}")
        with owner_connection() as conn:
            moved = schema_node(conn, schema)
        assert moved is not None
        assert moved[1:] == (host, port)
        assert forced_tables(schema) == forced_before
        assert snapshot(api, ids) == before
        started.refresh_from_db()
        assert started.status == MoveStatus.FAILED
        assert "Interrupted" in started.error
        (finished,) = TenantMove.objects.filter(tenant=mover.tenant).exclude(pk=started.pk)
        assert finished.status == MoveStatus.DONE
    finally:
        discard(mover)

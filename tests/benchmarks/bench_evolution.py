"""Evolution benchmark: the `tasks_due_at` evolution's phases against a bare psycopg loop.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with superuser `postgres`, Redis):

    .venv/bin/python -m tests.benchmarks.bench_evolution [--tenants 1000] [--tasks 20]
        [--rls-tenants 100] [--shared-rows 1000000] [--concurrency 2] [--batch-rows 1000]
        [--redis-url redis://127.0.0.1:6379/9] [--db taskflow_bench_evolution] [--keep]

`--tenants` schemas cloned from the template at the expand's parent revision, each with `--tasks`
tasks, and a shared schema of `--shared-rows` tasks over `--rls-tenants` rls tenants. For each
phase, in one run, side by side:

- expand: a bare loop (`--concurrency` threads, one connection each) running, per schema, the
  expand revision's SQL in one transaction then its two CREATE INDEX CONCURRENTLY, against the
  evolution's expand fan-out (a real Celery worker, `-c concurrency`), after the bare loop's work
  was undone;
- backfill: the bare loop running the same batched UPDATE (`--batch-rows` rows a transaction, by
  (tenant_id, id) keyset) over every tenant's rows, against the evolution's backfill fan-out,
  after `due_at` was emptied again (sync trigger off for that);
- switch: the evolution's sweep (no bare equivalent: it writes nothing);
- contract: the bare loop (DROP INDEX CONCURRENTLY, then the column), undone, against the
  evolution's contract (its two fan-outs).

Throughout, a writer thread updates random tasks as old code does (`due_date`) at a fixed rate,
and an API client drives the TaskFlow API through gunicorn (2 gthread workers, the platform's
gunicorn.conf.py): every WRITE_EVERY_S, in turn, a page of tasks and a PATCH of a task's due
time, of a schema tenant and of an rls tenant, as an old client (API version 2026-12-01,
`due_date`) and a new one (2026-12-06, `due_at`) in turn, each naming its version. Per phase
both report p50/p99 against an idle window measured in the same run, and their errors (any 5xx
or 4xx). The writer (old code) stops before the contracts, which drop the column it writes; the
API serves `due_at` from the switch on (old clients by transformation), so its client runs
through both contracts. Before every measured round the shared schema's tables are vacuumed
and a checkpoint taken (`settle`), so a round never pays for the rewrite the one before it left.
The contract starts past the gate (the API's processes served
`due_date` before the switch, within the report TTL), confirmed. Prints schemas/s and rows/s;
targets: the evolution >= 0.5x the bare loop's rate in each phase, 0 errors. Makes and drops its
own database (`--db`).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.benchmarks.bench_fanout import start_worker
from tests.benchmarks.bench_onboarding import ROOT, bench_env, create_database, drop_database
from tests.benchmarks.quotas import UNREACHABLE_PLANS

BENCH_DB = "taskflow_bench_evolution"
TARGET = 0.5
WRITE_EVERY_S = 0.02
# The expand phase runs to "head" (0008, the CASE sort keys, above the expand revision 0007:
# control_plane.evolution.catalog.Definition.expand_target); the bare loop runs the same plan.
PARENT, EXPAND, INDEXES_GONE, CONTRACT = "0006", "0008", "0007d", "0007c"
STEP_ATTEMPTS = 30  # of a bare step that deadlocks with the traffic (a loaded machine: often)


# --- Data --------------------------------------------------------------------------------------


def fill(args: argparse.Namespace) -> tuple[list[Any], list[Any]]:
    from psycopg import sql

    from tenants.database_roles import owner_connection
    from tenants.ids import ensure_id_sequence
    from tenants.models import Isolation, Tenant, TenantStatus, schema_name_for
    from tests.migrations_sqla.support import make_tenants, set_template

    set_template("", PARENT)
    print(f"cloning {args.tenants} tenant schemas ...", file=sys.stderr)
    schema_tenants = make_tenants("b", args.tenants)
    rls = Tenant.objects.bulk_create(
        [
            Tenant(name=f"r{i}", slug=f"r{i:05d}", schema_name=schema_name_for(f"r{i:05d}"),
                   isolation=Isolation.RLS, status=TenantStatus.ACTIVE)
            for i in range(args.rls_tenants)
        ]
    )  # fmt: skip
    per_rls = max(1, args.shared_rows // max(1, args.rls_tenants))
    print(f"writing {args.tenants * args.tasks} + {per_rls * len(rls)} tasks ...", file=sys.stderr)
    insert = (
        "SELECT set_config('app.tenant_id', %(t)s::text, true);"
        "WITH p AS (INSERT INTO {s}.projects (tenant_id, key, name) VALUES (%(t)s, 'P', 'p')"
        " RETURNING id) INSERT INTO {s}.tasks (tenant_id, project_id, title, due_date)"
        " SELECT %(t)s, p.id, 't', CASE WHEN g %% 4 <> 0 THEN date '2026-12-01' + g %% 300 END"
        " FROM p, generate_series(1, %(n)s) g"
    )
    with owner_connection() as conn:
        for tenant in [*schema_tenants, *rls]:  # 0006: ids come from the tenant's sequence
            ensure_id_sequence(conn, tenant.pk)
        conn.commit()
        conn.execute("ALTER TABLE shared.tasks DISABLE TRIGGER USER")  # no history for the fill
        for tenant, schema, count in [
            *((t, t.schema_name, args.tasks) for t in schema_tenants),
            *((t, "shared", per_rls) for t in rls),
        ]:
            cur = psycopg_client_cursor(conn)
            cur.execute(
                sql.SQL(insert).format(s=sql.Identifier(schema)).as_string(conn),
                {"t": tenant.pk, "n": count},
            )
            conn.commit()
        conn.execute("ALTER TABLE shared.tasks ENABLE TRIGGER USER")
        conn.commit()
    return schema_tenants, rls


def psycopg_client_cursor(conn: Any) -> Any:
    import psycopg

    return psycopg.ClientCursor(conn)


# --- Bare loop ---------------------------------------------------------------------------------


def bare(
    owner_url: str, items: list[Any], concurrency: int, work: Callable[[Any, Any], int]
) -> tuple[float, int]:
    """`work(conn, item)` for every item over `concurrency` connections; (seconds, rows)."""
    import psycopg

    todo = list(items)
    lock = threading.Lock()
    total = [0]

    def worker() -> None:
        with psycopg.connect(owner_url, autocommit=True) as conn:
            while True:
                with lock:
                    if not todo:
                        return
                    item = todo.pop()
                done = work(conn, item)
                with lock:
                    total[0] += done

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, total[0]


def migrate_sql(source: str, target: str) -> tuple[str, tuple[str, ...]]:
    from migrations_sqla import scripts, table_locks

    down = scripts.is_downgrade(scripts.script_directory(""), source, target)
    body = scripts.compile_sql("", source, target, down)
    # The tables locked up front, as the platform's plan does: without it a step that locks
    # shared.tasks in two modes loses every deadlock to a PATCH that read the row first.
    body = table_locks.lock_statement(body) + body
    return body, scripts.non_transactional_between("", source, target)


def schema_step(source: str, target: str) -> Callable[[Any, str], int]:
    """The revisions' SQL in one transaction (search_path set), then their index steps."""
    body, after = migrate_sql(source, target)

    def step(conn: Any, schema: str) -> int:
        import psycopg

        for attempt in range(STEP_ATTEMPTS):
            # Traffic takes the shared table's locks in another order: a deadlock or a lock
            # timeout is retried, as the platform retries it (else the thread and its
            # remaining schemas were lost).
            try:
                conn.execute(
                    (
                        f"BEGIN; SELECT set_config('search_path', '\"{schema}\", public', true);"
                        f"SET LOCAL lock_timeout = '5s'; {body} COMMIT;"
                    ).encode()
                )
                break
            except (psycopg.errors.DeadlockDetected, psycopg.errors.LockNotAvailable):
                conn.execute("ROLLBACK")
                if attempt + 1 == STEP_ATTEMPTS:
                    raise
                time.sleep(min(2.0, 0.2 * 2**attempt))
        for statement in after:
            conn.execute(statement.replace("{schema}", f'"{schema}"').encode())
        return 0

    return step


def backfill_step(batch_rows: int) -> Callable[[Any, tuple[str, int]], int]:
    def step(conn: Any, item: tuple[str, int]) -> int:
        import psycopg

        schema, tenant = item
        last, written = 0, 0
        cur = psycopg.ClientCursor(conn)
        while True:
            cur.execute(
                "BEGIN; SELECT set_config('app.tenant_id', %(t)s, true),"
                " set_config('app.copying_tenant', 'on', true);"
                f'WITH b AS (SELECT id FROM "{schema}".tasks WHERE tenant_id = %(t)s::bigint'
                " AND id > %(a)s ORDER BY tenant_id, id LIMIT %(n)s),"
                f' w AS (UPDATE "{schema}".tasks t SET due_at = t.due_date::timestamp AT TIME ZONE'
                " 'UTC' FROM b WHERE t.id = b.id AND t.due_at IS NULL AND t.due_date IS NOT NULL"
                " RETURNING 1) SELECT (SELECT max(id) FROM b) AS high, (SELECT count(*) FROM w);"
                " COMMIT;",
                {"t": str(tenant), "a": last, "n": batch_rows},
            )
            row = None
            while True:
                if cur.description is not None and cur.description[0].name == "high":
                    row = cur.fetchone()
                if not cur.nextset():
                    break
            if row is None or row[0] is None:
                return written
            last, written = int(row[0]), written + int(row[1])

    return step


def settle(owner_url: str) -> None:
    """VACUUM (ANALYZE) the shared schema's tables, then CHECKPOINT, before a measured round.

    What went before a round (an undo or an emptying rewrites up to every shared row) leaves
    dead rows that autovacuum would clean during whatever runs next, and dirty pages the next
    checkpoint writes: the round measured second (the evolution's, after the undo) paid for the
    round measured first. Settled, both start from the same state."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    superuser = make_conninfo(owner_url, user=os.environ.get("PGSUPERUSER", "postgres"))
    with psycopg.connect(superuser, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT format('%I.%I', schemaname, relname) FROM pg_stat_user_tables"
            " WHERE schemaname = 'shared'"
        ).fetchall()
        for (table,) in tables:
            conn.execute(f"VACUUM (ANALYZE) {table}".encode())
        conn.execute("CHECKPOINT")


def empty_due_at(owner_url: str, schemas: list[str]) -> None:
    import psycopg

    with psycopg.connect(owner_url, autocommit=True) as conn:
        for schema in schemas:
            conn.execute(
                f'ALTER TABLE "{schema}".tasks DISABLE TRIGGER USER;'
                f'ALTER TABLE "{schema}".tasks NO FORCE ROW LEVEL SECURITY;'
                f'UPDATE "{schema}".tasks SET due_at = NULL WHERE due_at IS NOT NULL;'
                f'ALTER TABLE "{schema}".tasks FORCE ROW LEVEL SECURITY;'
                f'ALTER TABLE "{schema}".tasks ENABLE TRIGGER USER;'.encode()
            )


# --- Load: old code writing due_date -----------------------------------------------------------


class Writer(threading.Thread):
    """Updates a random task's due_date every WRITE_EVERY_S, as old code does; latencies by mark."""

    def __init__(self, owner_url: str, targets: list[tuple[str, int]]) -> None:
        super().__init__(daemon=True)
        self.url, self.targets = owner_url, targets
        self.mark = "idle"
        self.samples: dict[str, list[float]] = {}
        self.errors: dict[str, list[str]] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        import psycopg

        conn = psycopg.connect(self.url, autocommit=True)
        while not self.stop.is_set():
            schema, tenant = random.choice(self.targets)
            mark = self.mark
            started = time.perf_counter()
            try:
                conn.execute("BEGIN")
                conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant),))
                conn.execute(
                    f'UPDATE "{schema}".tasks SET due_date = coalesce(due_date, date'
                    " '2027-01-01') + 1 WHERE tenant_id = %s AND id = (SELECT min(id) FROM"
                    f' "{schema}".tasks WHERE tenant_id = %s)',
                    (tenant, tenant),
                )
                conn.execute("COMMIT")
                self.samples.setdefault(mark, []).append(time.perf_counter() - started)
            except psycopg.Error as exc:
                self.errors.setdefault(mark, []).append(str(exc).splitlines()[0])
                conn = psycopg.connect(self.url, autocommit=True) if conn.broken else conn
                if not conn.broken:
                    conn.execute("ROLLBACK")
            time.sleep(WRITE_EVERY_S)
        conn.close()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


# --- Load: an API client through gunicorn ------------------------------------------------------


API_TASKS = 200


def api_tenants() -> list[tuple[str, str]]:
    """A schema tenant and an rls tenant with API_TASKS tasks each: [(host, member token)]."""
    from psycopg import sql

    from tenants.database_roles import owner_connection
    from tenants.models import Isolation, Tenant
    from tenants.placement import SHARED_SCHEMA
    from tenants.provisioning import provision_storage
    from tests.factories import make_member, make_tenant

    out = []
    for slug, isolation in (("evoapis", Isolation.SCHEMA), ("evoapir", Isolation.RLS)):
        tenant = make_tenant(slug, isolation=isolation)
        Tenant.objects.filter(pk=tenant.pk).update(revisions=provision_storage(tenant))
        schema = tenant.schema_name if isolation == Isolation.SCHEMA else SHARED_SCHEMA
        with owner_connection() as conn:
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant.pk),))
            conn.execute(
                sql.SQL(
                    "WITH p AS (INSERT INTO {s}.projects (tenant_id, key, name) VALUES (%(t)s,"
                    " 'P', 'p') RETURNING id) INSERT INTO {s}.tasks (tenant_id, project_id,"
                    " title, due_date) SELECT %(t)s, p.id, 't' || g, date '2026-12-01' + g"
                    " FROM p, generate_series(1, %(n)s) g"
                ).format(s=sql.Identifier(schema)),
                {"t": tenant.pk, "n": API_TASKS},
            )
            conn.commit()
        _, token = make_member(tenant, f"{slug}@example.com", role="member")
        out.append((f"{slug}.localhost", token))
    return out


class Gunicorn:
    """The API under gunicorn with the platform's configuration, on a free port."""

    def __init__(self, env: dict[str, str], log: Path, workers: int = 2) -> None:
        from tests.benchmarks.bench_taskflow_api import GUNICORN, HOST, Http
        from tests.processes import free_port

        self.port = free_port()
        self.log = log.open("wb")
        self.proc = subprocess.Popen(
            [GUNICORN, "control_plane.wsgi:application", "-c", "platform/gunicorn.conf.py",
             "--bind", f"127.0.0.1:{self.port}", "--worker-class", "gthread",
             "--workers", str(workers), "--threads", "4", "--keep-alive", "30"],
            cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=self.log,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while True:
            try:
                if Http(self.port, HOST, "").get("/healthz")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"gunicorn did not start; see {log}")
            time.sleep(0.3)

    def stop(self) -> None:
        from tests.processes import stop_process

        stop_process(self.proc, timeout=20)
        self.log.close()


# The clients of a rolling deploy: old code at the newest version that shows `due_date`, new code
# at the version that shows `due_at`. Each request names its version: without the header a
# request is served at the tenant's pin (the newest version), where `due_date` is an unknown
# field, and every old client's PATCH was a 400.
API_CLIENTS = (("2026-12-01", "due_date"), ("2026-12-06", "due_at"))


class ApiClient(threading.Thread):
    """Every WRITE_EVERY_S, in turn over the tenants: GET a page of tasks, then PATCH the due
    time of a task of that page (its version from the page), alternately as an old client
    (`due_date`, a day) and a new one (`due_at`, a time), each naming its API version;
    latencies by mark."""

    def __init__(self, port: int, tenants: list[tuple[str, str]]) -> None:
        super().__init__(daemon=True)
        self.port, self.tenants = port, tenants
        self.mark = "idle"
        self.samples: dict[str, list[float]] = {}
        self.errors: dict[str, list[str]] = {}
        self.reconnects = 0
        self.stop = threading.Event()

    def run(self) -> None:
        import http.client

        conns = [
            http.client.HTTPConnection("127.0.0.1", self.port, timeout=60) for _ in self.tenants
        ]
        pages: list[list[dict[str, Any]]] = [[] for _ in self.tenants]
        turn = 0
        while not self.stop.is_set():
            index = (turn // 2) % len(self.tenants)
            host, token = self.tenants[index]
            version, field = API_CLIENTS[(turn // (2 * len(self.tenants))) % len(API_CLIENTS)]
            headers = {"Host": host, "Authorization": f"Bearer {token}",
                       "TaskFlow-Version": version}  # fmt: skip
            if turn % 2 == 0 or not pages[index]:
                method, path, body = "GET", "/api/v1/tasks?limit=20", None
            else:
                task = random.choice(pages[index])
                method, path = "PATCH", f"/api/v1/tasks/{task['id']}"
                day = f"2027-{random.randint(1, 12):02d}-{random.randint(1, 28):02d}"
                due = day if field == "due_date" else f"{day}T{random.randint(0, 23):02d}:30:00Z"
                body = json.dumps({field: due, "version": task["version"]})
                headers["Content-Type"] = "application/json"
            mark = self.mark
            started = time.perf_counter()
            try:
                try:
                    conns[index].request(method, path, body=body, headers=headers)
                    response = conns[index].getresponse()
                except http.client.RemoteDisconnected:
                    # The server closed this keep-alive connection while it was idle (longer
                    # than gunicorn's keep-alive, when a request on the other connection waited
                    # behind the bench's own undo): the request was never read, and any HTTP
                    # client sends it again on a new connection, as here, once.
                    self.reconnects += 1
                    conns[index] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
                    conns[index].request(method, path, body=body, headers=headers)
                    response = conns[index].getresponse()
                payload = response.read()
                elapsed = time.perf_counter() - started
                if response.status >= 400:
                    self.errors.setdefault(mark, []).append(
                        f"{method} {path} -> {response.status} {payload[:200]!r}"
                    )
                else:
                    self.samples.setdefault(mark, []).append(elapsed)
                    data = json.loads(payload)
                    if method == "GET":
                        pages[index] = data["results"]
                    else:
                        pages[index] = [data if t["id"] == data["id"] else t for t in pages[index]]
            except (OSError, http.client.HTTPException) as exc:
                self.errors.setdefault(mark, []).append(f"{method} {path}: {exc}")
                conns[index] = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            turn += 1
            time.sleep(WRITE_EVERY_S)
        for conn in conns:
            conn.close()


# --- Platform ----------------------------------------------------------------------------------


def rounds_result(
    bare_rounds: list[tuple[float, int]],
    evolution_rounds: list[tuple[float, int]],
    unit: str,
    n: int,
) -> dict[str, Any]:
    """Interleaved rounds of one phase: the medians compared, every round's seconds shown."""
    return {
        "bare": (statistics.median(b[0] for b in bare_rounds), 0),
        "platform": (statistics.median(p[0] for p in evolution_rounds), 0),
        "rounds": [(b[0], p[0]) for b, p in zip(bare_rounds, evolution_rounds, strict=True)],
        "unit": unit,
        "n": n,
    }


def platform_phase(
    evolution: Any, phase: str, *, rollback: bool = False, **kwargs: Any
) -> tuple[float, int]:
    from control_plane.evolution import phases
    from control_plane.evolution.models import EvolutionRun
    from control_plane.fanout.models import MigrationRun

    started = time.perf_counter()
    if rollback:
        phases.rollback(evolution, phase, confirm=True)
    else:
        phases.start_phase(evolution, phase, **kwargs)
    resumed = 0
    while True:
        # As a watcher that settles each run once it ends (the contract's second run starts
        # then), but polling only the run's status: the page's full state is not the work.
        newest = EvolutionRun.objects.filter(evolution=evolution).order_by("-id").first()
        assert newest is not None
        status = MigrationRun.objects.filter(pk=newest.run_id).values_list("status", flat=True)
        if status.get() in ("succeeded", "failed", "cancelled"):
            state = phases.evolution_state(evolution)
            if state["finished"] and state["status"] == "failed" and rollback and resumed < 3:
                # The expand's undo between rounds (not a measured window) loses deadlocks to
                # the writer under load: resumed, as an operator would.
                print(f"resuming the rollback: {state['current']['error']}", file=sys.stderr)
                phases.resume(evolution)
                resumed += 1
                continue
            if state["finished"]:
                break
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    if state["status"] != "idle" or state["completed"] != ("" if rollback else phase):
        raise SystemExit(f"{phase} did not complete: {state}")
    from control_plane.evolution.models import EvolutionRun
    from control_plane.fanout.runs import rows_written

    written = sum(
        rows_written(r.run) for r in EvolutionRun.objects.filter(evolution=evolution, phase=phase)
    )
    return seconds, written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--rls-tenants", type=int, default=100)
    parser.add_argument("--shared-rows", type=int, default=1_000_000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--batch-rows", type=int, default=1000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--db", default=BENCH_DB, help="The database it makes and drops.")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--rounds", type=int, default=1,
        help="expand and contract: interleaved rounds of (bare loop, evolution), medians compared",
    )  # fmt: skip
    args = parser.parse_args()
    os.chdir(ROOT)
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench_evolution_"))
    print(f"creating database {args.db} ...", file=sys.stderr)
    create_database(args.db)
    env = bench_env(args.db, "control_plane.settings")
    # Limits on, with quotas the client never reaches: its writes every 40 ms would pass a
    # token's share of a plan's writes, and a 429 says nothing about the evolution.
    env["RATE_LIMIT_PLANS"] = json.dumps(UNREACHABLE_PLANS)
    env.update(REDIS_URL=args.redis_url, CACHE_KEY_PREFIX="tfbenchev")
    worker = server = None
    try:
        subprocess.run(
            [sys.executable, "manage.py", "setup_platform"], cwd=ROOT, env=env, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        os.environ.update(env)
        import django

        django.setup()
        from django.conf import settings

        from control_plane.celery import app as celery_app
        from control_plane.evolution import phases
        from control_plane.evolution.models import Evolution
        from tenants.models import Isolation, Tenant

        schema_tenants, rls = fill(args)
        api = api_tenants()
        owner_url = settings.MIGRATION_DATABASE_URL.replace("postgres://", "postgresql://", 1)
        schemas = ["template", "shared", *(t.schema_name for t in schema_tenants)]
        pairs = [(t.schema_name, t.pk) for t in schema_tenants] + [("shared", t.pk) for t in rls]
        rows_total = args.tenants * args.tasks + len(rls) * max(
            1, args.shared_rows // max(1, len(rls))
        )
        celery_app.control.purge()
        worker = start_worker(env, args.concurrency, ROOT / ".data" / "worker-bench-evolution.log")
        deadline = time.monotonic() + 180  # a loaded machine starts it slowly
        while not celery_app.control.ping(timeout=0.5):
            if time.monotonic() > deadline:
                raise SystemExit("worker did not start; see .data/worker-bench-evolution.log")
        evolution = phases.get_evolution("tasks_due_at")
        phases.set_options(
            evolution,
            {"concurrency": args.concurrency, "batch_size": args.batch_size,
             "batch_rows": args.batch_rows, "lock_timeout": "5s"},
        )  # fmt: skip
        server = Gunicorn(env, ROOT / ".data" / "gunicorn-bench-evolution.log")
        client = ApiClient(server.port, api)
        client.start()
        writer = Writer(owner_url, random.sample(pairs, min(len(pairs), 200)))
        writer.start()
        time.sleep(10)  # the idle window
        results: dict[str, dict[str, Any]] = {}

        def measure(name: str, fn: Callable[[], tuple[float, int]]) -> tuple[float, int]:
            settle(owner_url)
            writer.mark = client.mark = name
            out = fn()
            writer.mark = client.mark = "between"
            return out

        print(
            "expand: bare loop, undo, evolution (rolled back between rounds) ...", file=sys.stderr
        )
        bare_rounds, evolution_rounds = [], []
        for round_ in range(args.rounds):
            if round_:
                platform_phase(evolution, "expand", rollback=True)
            bare_rounds.append(
                measure(
                    "bare expand",
                    lambda: bare(owner_url, schemas, args.concurrency, schema_step(PARENT, EXPAND)),
                )
            )
            bare(owner_url, schemas, args.concurrency, schema_step(EXPAND, PARENT))
            evolution_rounds.append(measure("expand", lambda: platform_phase(evolution, "expand")))
        results["expand"] = rounds_result(bare_rounds, evolution_rounds, "schemas", len(schemas))

        print("backfill: bare loop, empty again, evolution ...", file=sys.stderr)
        b = measure(
            "bare backfill",
            lambda: bare(owner_url, pairs, args.concurrency, backfill_step(args.batch_rows)),
        )
        empty_due_at(owner_url, schemas)
        p = measure("backfill", lambda: platform_phase(evolution, "backfill"))
        results["backfill"] = {"bare": b, "platform": p, "unit": "rows", "n": rows_total}

        print("switch ...", file=sys.stderr)
        p = measure("switch", lambda: platform_phase(evolution, "switch"))
        results["switch"] = {"bare": None, "platform": p, "unit": "schemas", "n": len(schemas)}

        print("contract: bare loop, undo, evolution ...", file=sys.stderr)
        # Old code is gone before a contract (the gate asks for that): the writer stops before
        # either contract, which would drop the column it writes. The API serves `due_at` since
        # the switch (old clients by transformation), so the client goes on through both.
        writer.stop.set()
        writer.join()

        def bare_contract() -> tuple[float, int]:
            first = bare(owner_url, schemas, args.concurrency, schema_step(EXPAND, INDEXES_GONE))
            then = bare(owner_url, schemas, args.concurrency, schema_step(INDEXES_GONE, CONTRACT))
            return first[0] + then[0], 0

        # Every schema tenant (the API client's too), as the switch left them: the next round's
        # contract starts from there, recorded and in the schema.
        everyone = Tenant.objects.filter(isolation=Isolation.SCHEMA).exclude(schema_name="public")
        expanded = {t.pk: t.revisions for t in everyone}
        every_schema = ["template", "shared", *(t.schema_name for t in everyone)]
        bare_rounds, evolution_rounds = [], []
        for round_ in range(args.rounds):
            if round_:  # the contract undone behind the evolution's back, for the next round
                bare(owner_url, every_schema, args.concurrency, schema_step(CONTRACT, EXPAND))
                for pk, revisions in expanded.items():
                    Tenant.objects.filter(pk=pk).update(revisions=revisions)
                Evolution.objects.filter(pk=evolution.pk).update(completed="switch")
            bare_rounds.append(measure("bare contract", bare_contract))
            bare(owner_url, schemas, args.concurrency, schema_step(CONTRACT, EXPAND))
            evolution_rounds.append(
                measure(
                    "contract",
                    lambda: platform_phase(evolution, "contract", override=True, confirm=True),
                )
            )
        client.stop.set()
        client.join()
        server.stop()
        server = None
        results["contract"] = rounds_result(bare_rounds, evolution_rounds, "schemas", len(schemas))
        print(report(args, results, writer, load))
        print(report_http(client, os.getloadavg()[0]))
        print(breakdown(evolution))
    finally:
        if server is not None:
            server.stop()
        if worker is not None:
            worker.terminate()
            worker.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            drop_database(args.db)


def report(
    args: argparse.Namespace, results: dict[str, dict[str, Any]], writer: Writer, load: float
) -> str:
    idle = writer.samples.get("idle", [])
    lines = [
        "",
        f"Evolution tasks_due_at: {args.tenants} schema tenants x {args.tasks} tasks, shared"
        f" {args.shared_rows} rows over {args.rls_tenants} rls tenants, concurrency"
        f" {args.concurrency}, {args.batch_rows} rows a backfill transaction (load avg {load:.1f})",
        "",
        f"{'phase':<10} {'bare s':>8} {'evolution s':>12} {'bare rate':>12} {'evo rate':>12}"
        f" {'ratio':>6} {'target':>7}",
    ]
    for phase, r in results.items():
        seconds, _rows = r["platform"]
        rate = r["n"] / seconds
        if r["bare"]:
            bare_s = r["bare"][0]
            bare_rate = r["n"] / bare_s
            ratio = rate / bare_rate
            verdict = "ok" if ratio >= TARGET else "MISSED"
            lines.append(
                f"{phase:<10} {bare_s:8.2f} {seconds:12.2f} {bare_rate:10.0f}/s {rate:10.0f}/s"
                f" {ratio:6.2f} {verdict:>7}  ({r['unit']})"
            )
            if len(r.get("rounds", ())) > 1:
                lines.append(
                    f"{'':<10} rounds (bare s, evolution s): "
                    + ", ".join(f"{b:.2f}/{p:.2f}" for b, p in r["rounds"])
                )
        else:
            lines.append(
                f"{phase:<10} {'-':>8} {seconds:12.2f} {'-':>12} {rate:10.0f}/s  ({r['unit']})"
            )
    lines += [
        "",
        f"old-code writes (UPDATE due_date every {WRITE_EVERY_S * 1000:.0f} ms): p50/p99 ms, errors",
    ]
    lines.append(f"{'window':<15} {'n':>6} {'p50':>8} {'p99':>8} {'p99/idle':>9} {'errors':>7}")
    idle99 = pct(idle, 0.99)
    for mark in [
        "idle",
        "bare expand",
        "expand",
        "bare backfill",
        "backfill",
        "switch",
    ]:
        samples = writer.samples.get(mark, [])
        errors = writer.errors.get(mark, [])
        lines.append(
            f"{mark:<15} {len(samples):6d} {pct(samples, 0.5):8.2f} {pct(samples, 0.99):8.2f}"
            f" {pct(samples, 0.99) / idle99 if idle else float('nan'):9.2f} {len(errors):7d}"
        )
    all_errors = [e for errs in writer.errors.values() for e in errs]
    if all_errors:
        lines.append(f"first error: {all_errors[0]}")
    if idle:
        lines.append(f"idle median {statistics.median(idle) * 1000:.2f} ms")
    return "\n".join(lines)


def breakdown(evolution: Any) -> str:
    """Where each phase run's time went: waiting for a worker, the template and shared schemas,
    the tenants (first started to last finished), and the tail to the run's end."""
    from django.db.models import Avg, Count, Max, Min, Sum

    from control_plane.evolution.models import EvolutionRun

    lines = [
        "",
        "run breakdown, s: queued, platform schemas, tenants+lanes, tail;"
        " then per tenant step, ms: the migrator's own time (mean), the span over the steps"
        " x concurrency (what one step costs a lane, bookkeeping included)",
    ]
    for record in EvolutionRun.objects.filter(evolution=evolution).select_related("run"):
        run = record.run
        work = run.steps.exclude(tenant__isnull=True, schema_name__in=("template", "shared"))
        span = work.aggregate(
            first=Min("started_at"),
            last=Max("finished_at"),
            own=Avg("duration_ms"),
            n=Count("id"),
            attempts=Sum("attempts"),
        )
        durations = sorted(d for d in work.values_list("duration_ms", flat=True) if d is not None)
        if not (run.started_at and run.finished_at and span["first"] and span["last"]):
            continue
        lines.append(
            f"{record.phase}.{record.step} run {run.pk}:"
            f" {(run.started_at - run.created_at).total_seconds():.2f},"
            f" {(span['first'] - run.started_at).total_seconds():.2f},"
            f" {(span['last'] - span['first']).total_seconds():.2f},"
            f" {(run.finished_at - span['last']).total_seconds():.2f};"
            f" {span['own'] or 0:.1f},"
            f" {(span['last'] - span['first']).total_seconds() * 1000 * run.concurrency / max(1, span['n']):.1f}"
            f" (median {durations[len(durations) // 2] if durations else 0:.1f},"
            f" {span['attempts'] or 0} attempts for {span['n']} steps)"
        )
    return "\n".join(lines)


def report_http(client: ApiClient, load: float) -> str:
    idle = client.samples.get("idle", [])
    idle99 = pct(idle, 0.99)
    lines = [
        "",
        "API client through gunicorn (GET a page / PATCH due_date at 2026-12-01, due_at at"
        f" 2026-12-06, one every {WRITE_EVERY_S * 1000:.0f} ms, a schema and an rls tenant): p50/p99 ms, errors"
        f" (load avg at the end {load:.1f})",
        f"{'window':<15} {'n':>6} {'p50':>8} {'p99':>8} {'p99/idle':>9} {'errors':>7}",
    ]
    for mark in ["idle", "bare expand", "expand", "bare backfill", "backfill", "switch",
                 "bare contract", "contract"]:  # fmt: skip
        samples = client.samples.get(mark, [])
        errors = client.errors.get(mark, [])
        lines.append(
            f"{mark:<15} {len(samples):6d} {pct(samples, 0.5):8.2f} {pct(samples, 0.99):8.2f}"
            f" {pct(samples, 0.99) / idle99 if idle else float('nan'):9.2f} {len(errors):7d}"
        )
    all_errors = [e for errs in client.errors.values() for e in errs]
    if all_errors:
        lines.append(f"first error: {all_errors[0]}")
    lines.append(
        f"requests sent again on a new connection after an idle keep-alive close: {client.reconnects}"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

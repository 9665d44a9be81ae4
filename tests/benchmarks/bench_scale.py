"""The scale curve on one server: what grows when the platform holds 100, 1,000, 10,000 tenants.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with superuser `postgres`, Redis):

    .venv/bin/python -m tests.benchmarks.bench_scale [--steps 100,1000,10000] [--large 3]
        [--large-tasks 20000] [--small-tasks 5] [--onboard 20] [--requests 2000] [--clients 4]
        [--workers 2] [--threads 4] [--concurrency 2] [--batch-size 50] [--database NAME]
        [--keep] [--reuse] [--citus [--citus-port 9700]]

One throw-away database (`<DB_NAME>_bench_scale`, or --database) grows step by step: at each
step it holds that many schema-mode tenants and as many rls-mode tenants, all small (a project
and --small-tasks tasks) but --large per mode (--large-tasks tasks each). Tenants are added the
way the platform makes them (clone_schema of the template for schema mode, one owner connection;
rows, an id sequence, a domain, a member and a token in bulk), so 10,000 fit in minutes. At each
step, measured then:

1. onboarding p50/p95 through provision_onboarding in-process (as bench_onboarding): a spare
   ready (refilled untimed before each), the clone path (no spare), rls; interleaved.
2. fan-out through a real Celery worker (-c --concurrency): the no-op run (every tenant at the
   target) and an add-column-plus-index revision (tests.migrations_sqla.support) against the bare
   psycopg loop at the same concurrency (bench_fanout.bare_loop), then the fan-out back down.
   The worker's own PostgreSQL backends' anonymous memory (smaps of the backend PIDs, which
   holds the per-connection catalog caches) and the worker processes' RSS after the run.
3. the API through gunicorn (gthread --workers x --threads): GET /api/v1/tasks?limit=20 for
   tenants drawn at random from all of them, --clients keep-alive connections; p50/p99, and
   after each fifth of the requests the web's backends' anonymous memory (PGAPPNAME marks them)
   and the web workers' RSS: a curve that keeps rising is memory without a bound.
4. the catalog (pg_class rows, pg_catalog's size, the database's size) and `pg_dump
   --schema-only` time: of the whole database while the tables it locks fit in half the
   server's lock table (past it pg_dump fails with "out of shared memory" and starves every
   other session of the server of locks first), and of one tenant schema (`--schema`).
The API's schema-tenant p50 over its rls-tenant p50 in the same run is printed too: rls
tenants do not touch more relations as schemas are added, so that ratio cancels the load of
a shared machine, which moves the absolute figures between steps far more.

Each step's figures are kept in .data/bench_scale_<database>.json; the table prints every step
held there with its load average, and the targets compare the largest step with the smallest:
onboarding p50 <= 1.2x, no-op fan-out <= 2 s, fan-out >= 0.5x the bare loop, API p50 <= 1.2x,
the web's backend memory bounded (its largest backend <= 1.2x the first step's; the API runs
twice, connections never recycled, then recycled per TASKFLOW_POOL_RECYCLE_SCHEMAS). `--reuse` keeps an existing
database and its results (grow 100 -> 1,000 -> 10,000 in separate runs), `--keep` keeps it
afterwards. Not collected by pytest.

`--citus` runs the same steps against the Citus cluster of `platform/dev.sh citus-start` (a
coordinator on --citus-port, 9700, and two workers on the next two ports): the database is made
on every node with the roles and the extension, the workers are added to the coordinator, and
the platform runs with CITUS_DISTRIBUTE_SCHEMAS and CITUS_DISTRIBUTE_SHARED on (as `platform/dev.sh
citus` does): the shared tables distributed by tenant_id at set-up, every schema tenant, the bulk
ones too, distributed as onboarding distributes it. Two workers on this host share its cores:
compare the curve's shape with the plain run's, not its absolute figures. Backend memory is the
coordinator's backends' (the workers' connections are Citus's own); the catalog and pg_dump are
the coordinator's.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import secrets
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from tests.benchmarks.bench_onboarding import (
    APP_PASSWORD,
    APP_ROLE,
    DB_PORT,
    OWNER_PASSWORD,
    OWNER_ROLE,
    PGSUPERUSER,
    PY,
    ROOT,
    bench_env,
    create_database,
    drop_database,
    p50,
    p95,
)

TARGET_ONBOARD_RATIO = 1.2
TARGET_NOOP_S = 2.0
TARGET_VS_BARE = 0.5
TARGET_API_RATIO = 1.2
TARGET_MEMORY_GROWTH = 1.2
RENEW_EVERY = 100
WEB_APP_NAME = "bench_scale_web"
WORKER_APP_NAME = "bench_scale_worker"
BENCH_QUEUE = "bench_scale"
PATH = "/api/v1/tasks?limit=20"

TOKENS_TABLE = """
CREATE TABLE IF NOT EXISTS public.bench_scale_tokens (
    slug text PRIMARY KEY, host text NOT NULL, token text NOT NULL, mode text NOT NULL,
    large boolean NOT NULL
)
"""
FILL = (
    "BEGIN; SELECT set_config('app.tenant_id', '{tid}', true),"
    " set_config('app.copying_tenant', 'on', true);"
    "WITH p AS (INSERT INTO {schema}.projects (tenant_id, key, name)"
    " VALUES ({tid}, 'P1', 'Bench') RETURNING id)"
    " INSERT INTO {schema}.tasks (tenant_id, project_id, title, priority, status, due_date,"
    " created_at, updated_at)"
    " SELECT {tid}, p.id, 'task ' || g, g % 5, (ARRAY['todo','in_progress','done'])[1 + g % 3],"
    " CASE WHEN g % 4 = 0 THEN NULL ELSE date '2030-01-01' + (g % 365) END,"
    " now() - make_interval(secs => g), now() - make_interval(secs => g)"
    " FROM p, generate_series(1, {tasks}) g; COMMIT"
)


CITUS_NODES = 3  # the coordinator, then two workers (platform/dev.sh)
CITUS_FILL = (
    "WITH p AS (INSERT INTO {schema}.projects (tenant_id, key, name)"
    " VALUES ({tid}, 'P1', 'Bench') RETURNING id) SELECT id FROM p",
    "INSERT INTO {schema}.tasks (tenant_id, project_id, title, priority, status, due_date,"
    " created_at, updated_at)"
    " SELECT {tid}, {project}, 'task ' || g, g % 5, (ARRAY['todo','in_progress','done'])[1 + g % 3],"
    " CASE WHEN g % 4 = 0 THEN NULL ELSE date '2030-01-01' + (g % 365) END,"
    " now() - make_interval(secs => g), now() - make_interval(secs => g)"
    " FROM generate_series(1, {tasks}) g ON CONFLICT DO NOTHING",
)


def default_database(citus: bool = False) -> str:
    return f"{os.environ.get('DB_NAME', 'taskflow')}_bench_scale" + ("_citus" if citus else "")


def results_file(db: str) -> Path:
    return ROOT / ".data" / f"bench_scale_{db}.json"


def database_exists(db: str, port: str) -> bool:
    out = subprocess.run(
        ["psql", "-X", "-At", "-h", "127.0.0.1", "-p", port, "-U", PGSUPERUSER, "-d", "postgres", "-c",
         f"SELECT 1 FROM pg_database WHERE datname = '{db}'"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return out.stdout.strip() == "1"


def scale_env(db: str, redis_url: str, port: str, citus: bool) -> dict[str, str]:
    env = bench_env(db, "control_plane.settings")
    for key in ("DATABASE_URL", "MIGRATION_DATABASE_URL"):
        env[key] = env[key].replace(f":{DB_PORT}/", f":{port}/", 1)
    env["DB_PORT"] = port
    if citus:  # as platform/dev.sh citus runs the platform
        env.update(CITUS_DISTRIBUTE_SCHEMAS="true", CITUS_DISTRIBUTE_SHARED="true")
    env.update(
        REDIS_URL=redis_url,
        CELERY_BROKER_URL=redis_url,
        CACHE_KEY_PREFIX=f"tfbenchscale{db}",
        DJANGO_ENV="development",
        SECRET_KEY="bench-scale-" + "x" * 48,
        CACHE_SOCKET_TIMEOUT_SECONDS="2",
        SPARE_SCHEMAS="0",  # onboarding() asks for a spare when it times that path
    )
    return env


# --- The Citus cluster --------------------------------------------------------------------------


def psql_at(port: int, *args: str) -> None:
    """psql as the superuser on one node of the cluster."""
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(port),
         "-U", PGSUPERUSER, *args],
        check=True, env={**os.environ, "PGOPTIONS": "-c client_min_messages=warning"},
        stdout=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip


def drop_citus_database(db: str, port: int) -> None:
    for node in range(CITUS_NODES):
        psql_at(port + node, "-d", "postgres", "-c", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def create_citus_database(db: str, port: int) -> None:
    """As platform/dev.sh fresh_citus_database: the roles and the database on every node (a
    role made on the coordinator's `postgres` database never reaches the workers), the
    extension in each, the coordinator's host set and the workers added."""
    drop_citus_database(db, port)
    for node in range(CITUS_NODES):
        psql_at(
            port + node, "-d", "postgres",
            "-v", f"owner_role={OWNER_ROLE}", "-v", f"owner_password={OWNER_PASSWORD}",
            "-v", f"app_role={APP_ROLE}", "-v", f"app_password={APP_PASSWORD}",
            "-v", f"db_name={db}", "-f", "platform/postgres/init.sql",
        )  # fmt: skip
        psql_at(port + node, "-d", db, "-c", "CREATE EXTENSION IF NOT EXISTS citus")
    psql_at(port, "-d", db, "-c", f"SELECT citus_set_coordinator_host('127.0.0.1', {port})")
    for node in range(1, CITUS_NODES):
        psql_at(port, "-d", db, "-c", f"SELECT citus_add_node('127.0.0.1', {port + node})")


# --- Memory ------------------------------------------------------------------------------------


def smaps(pid: int) -> dict[str, int]:
    """kB figures of /proc/<pid>/smaps_rollup (Rss, Pss_Anon, ...); {} when the process is gone."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return {}
    found = {}
    for line in text.splitlines()[1:]:
        name, _, rest = line.partition(":")
        found[name] = int(rest.split()[0])
    return found


def backend_memory(conn: Any, app_name: str) -> dict[str, float]:
    """Anonymous memory (MB) of the PostgreSQL backends with this application_name: where a
    backend's catalog caches (CacheMemoryContext) live; shared buffers are not in it."""
    pids = [
        row[0]
        for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app_name,)
        ).fetchall()
    ]
    anon = [smaps(pid).get("Pss_Anon", 0) / 1024 for pid in pids]
    anon = [a for a in anon if a]
    return {
        "backends": len(anon),
        "max_mb": max(anon, default=0.0),
        "sum_mb": sum(anon),
    }


def rss_mb(pids: list[int]) -> float:
    return sum(smaps(pid).get("Rss", 0) for pid in pids) / 1024


# --- Growing the tenant population -------------------------------------------------------------


def existing(mode: str) -> int:
    from tenants.models import Tenant

    return Tenant.objects.filter(isolation=mode).exclude(schema_name="public").count()


def owner_url() -> str:
    from django.conf import settings

    return str(settings.MIGRATION_DATABASE_URL).replace("postgres://", "postgresql://", 1)


def add_tenants(
    mode: str, count: int, start: int, tasks: int, *, large: bool, connections: int
) -> None:
    """`count` active tenants of `mode`, as onboarding would leave them, made in bulk."""
    from django.contrib.auth import get_user_model

    from control_plane.identity.models import ApiToken, Membership
    from control_plane.identity.tokens import new_token_secret
    from tenants.database_roles import owner_connection
    from tenants.models import Domain, Tenant, TenantStatus, schema_name_for

    user_model = get_user_model()
    kind = "l" if large else "f"
    slugs = [f"{kind}{mode[0]}{i:05d}" for i in range(start, start + count)]
    tenants = Tenant.objects.bulk_create(
        [
            Tenant(
                name=slug,
                slug=slug,
                schema_name=schema_name_for(slug),
                isolation=mode,
                status=TenantStatus.ACTIVE,
            )
            for slug in slugs
        ]
    )
    Domain.objects.bulk_create(
        [Domain(domain=f"{t.slug}.scale.localhost", tenant=t, is_primary=True) for t in tenants]
    )
    users = user_model.objects.bulk_create(
        [
            user_model(
                username=f"{t.slug}@scale.example", email=f"{t.slug}@scale.example", password="!"
            )
            for t in tenants
        ]
    )
    Membership.objects.bulk_create(
        [Membership(user=u, tenant=t, role="owner") for u, t in zip(users, tenants, strict=True)]
    )
    secrets_ = [new_token_secret() for _ in tenants]
    ApiToken.objects.bulk_create(
        [
            ApiToken(user=u, tenant=t, prefix=s.prefix, digest=s.digest)
            for u, t, s in zip(users, tenants, secrets_, strict=True)
        ]
    )
    with owner_connection(autocommit=True) as conn:
        conn.execute(TOKENS_TABLE)
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO public.bench_scale_tokens VALUES (%s, %s, %s, %s, %s)",
                [
                    (t.slug, f"{t.slug}.scale.localhost", s.value, mode, large)
                    for t, s in zip(tenants, secrets_, strict=True)
                ],
            )
    provide_storage(tenants, mode, tasks, connections)


def provide_storage(tenants: list[Any], mode: str, tasks: int, connections: int) -> None:
    """Each tenant's id sequence, schema (a clone of the template) and rows, over `connections`
    owner connections, each replaced every RENEW_EVERY tenants: a backend that has created
    thousands of schemas carries their catalog entries and gets slower with every one."""
    from django.conf import settings
    from psycopg import sql

    from tenants.citus import is_citus
    from tenants.cloning import clone_schema, read_revisions
    from tenants.database_roles import app_role_name, owner_connection
    from tenants.distribution import distribute_schema
    from tenants.ids import ensure_id_sequence
    from tenants.models import Tenant
    from tenants.placement import SHARED_SCHEMA

    with owner_connection() as conn:
        revisions = read_revisions(conn, SHARED_SCHEMA)
        citus = settings.CITUS_DISTRIBUTE_SCHEMAS and is_citus(conn)
    work = list(enumerate(tenants))
    lock = threading.Lock()
    failures: list[BaseException] = []

    def storage() -> None:
        nonlocal revisions
        while work and not failures:
            # Its own connection, not the pool's: the setting must not reach the timed
            # onboardings.
            with psycopg.connect(owner_url(), autocommit=True) as conn:
                conn.execute("SET synchronous_commit = off")  # the bench's filler only
                for _ in range(RENEW_EVERY):
                    with lock:
                        if not work or failures:
                            return
                        n, tenant = work.pop()
                    try:
                        ensure_id_sequence(conn, tenant.pk)
                        if mode == "schema":
                            made = clone_schema(conn, tenant.schema_name, grant_to=app_role_name())
                            if citus:  # as provisioning does on Citus
                                distribute_schema(conn, tenant.schema_name)
                            with lock:
                                revisions = made
                        schema = tenant.schema_name if mode == "schema" else SHARED_SCHEMA
                        if citus:
                            fill_on_citus(conn, tenant.pk, schema, tasks)
                        else:
                            fill = FILL.format(
                                tid=tenant.pk,
                                schema=sql.Identifier(schema).as_string(conn),
                                tasks=tasks,
                            )
                            conn.execute(fill.encode())
                    except BaseException as exc:
                        with lock:
                            failures.append(exc)
                        raise
                    if n and n % 500 == 0:
                        print(f"  {mode}: {len(work)} tenants to go ...", file=sys.stderr)

    threads = [threading.Thread(target=storage) for _ in range(connections)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise SystemExit(f"adding tenants failed: {failures[0]}")
    Tenant.objects.filter(pk__in=[t.pk for t in tenants]).update(revisions=revisions)


def fill_on_citus(conn: Any, tenant_id: int, schema: str, tasks: int) -> None:
    """FILL on a Citus coordinator: the tenant bound with SET LOCAL in a query of its own (a
    set_config never reaches the workers; tenants.local_settings), then one statement per
    query, the tasks inserted with ON CONFLICT (else Citus COPYs the INSERT ... SELECT into the
    shards, which it refuses under row-level security)."""
    from psycopg import sql

    from tenants.local_settings import bind_tenant

    name = sql.Identifier(schema).as_string(conn)
    with conn.transaction():
        conn.execute(bind_tenant(tenant_id, copying=True))
        (project,) = conn.execute(CITUS_FILL[0].format(schema=name, tid=tenant_id)).fetchone()
        conn.execute(
            CITUS_FILL[1].format(schema=name, tid=tenant_id, project=project, tasks=tasks).encode()
        )


def unfinished(mode: str) -> list[Any]:
    """Tenants of an earlier run cut short while adding them: no schema (schema mode) or no
    id sequence yet."""
    from tenants.database_roles import owner_connection
    from tenants.ids import sequence_name
    from tenants.models import Tenant

    tenants = list(Tenant.objects.filter(isolation=mode, slug__regex=r"^[fl][sr]\d{5}$"))
    with owner_connection() as conn:
        names = {row[0] for row in conn.execute("SELECT nspname FROM pg_namespace")}
        sequences = {
            row[0]
            for row in conn.execute(
                "SELECT relname FROM pg_class WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace"
            )
        }
    if mode == "schema":
        return [t for t in tenants if t.schema_name not in names]
    return [t for t in tenants if sequence_name(t.pk) not in sequences]


def grow(step: int, args: argparse.Namespace) -> float:
    """Bring both modes to `step` tenants; seconds taken."""
    started = time.perf_counter()
    for mode in ("schema", "rls"):
        left = unfinished(mode)
        if left:
            print(f"finishing {len(left)} {mode} tenants of an earlier run ...", file=sys.stderr)
            provide_storage(left, mode, args.small_tasks, args.grow_connections)
        have = existing(mode)
        if have == 0:
            add_tenants(mode, args.large, 0, args.large_tasks, large=True, connections=1)
            have = args.large
        if step > have:
            print(f"adding {step - have} {mode} tenants ...", file=sys.stderr)
            add_tenants(
                mode, step - have, have, args.small_tasks, large=False,
                connections=args.grow_connections,
            )  # fmt: skip
    from tenants.database_roles import owner_connection

    # The shared tables and the large tenants' (a database-wide ANALYZE takes minutes at
    # thousands of schemas); small tenants' tables stay without statistics, as new ones are.
    with owner_connection(autocommit=True) as conn:
        conn.execute("ANALYZE shared.projects, shared.tasks")
        for (schema,) in conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_ls%'"
        ).fetchall():
            conn.execute(f'ANALYZE "{schema}".projects, "{schema}".tasks')
    return time.perf_counter() - started


# --- 1. Onboarding -----------------------------------------------------------------------------


def onboarding(count: int) -> dict[str, list[float]]:
    """provision_onboarding wall times (ms) per path, interleaved; the tenants stay."""
    from django.conf import settings

    import control_plane.tenancy.onboarding as onboard_service
    from control_plane.celery import app as celery_app
    from tenants.provisioning import warm_up
    from tenants.spares import drop_spares, refill_spares

    celery_app.conf.task_default_queue = BENCH_QUEUE  # the spare refill's message, never consumed
    run = secrets.token_hex(2)

    def onboard(slug: str, isolation: str) -> float:
        data = onboard_service.validate_onboarding(
            name=slug, slug=slug, domain=f"{slug}.scale.localhost", isolation=isolation,
            owner_email=f"{slug}@scale.example",
        )  # fmt: skip
        requested = onboard_service.request_onboarding(data=data, enqueue=False)
        started = time.perf_counter()
        onboard_service.provision_onboarding(requested.onboarding.pk)
        return (time.perf_counter() - started) * 1000

    warm_up()
    times: dict[str, list[float]] = {"spare": [], "clone": [], "rls": []}
    for i in range(-2, count):  # two untimed rounds first
        settings.SPARE_SCHEMAS = 1
        refill_spares(1)
        spare = onboard(f"op{run}{i + 2:03d}", "schema")
        settings.SPARE_SCHEMAS = 0
        clone = onboard(f"oc{run}{i + 2:03d}", "schema")
        rls = onboard(f"or{run}{i + 2:03d}", "rls")
        if i >= 0:
            times["spare"].append(spare)
            times["clone"].append(clone)
            times["rls"].append(rls)
    drop_spares()
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_delete(BENCH_QUEUE)  # type: ignore[attr-defined]
    return times


# --- 2. Fan-out --------------------------------------------------------------------------------


def start_worker(env: dict[str, str], concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [PY, "-m", "celery", "-A", "control_plane", "worker", "-Q", "migrations",
             "-c", str(concurrency), "-n", f"bench-scale@{os.getpid()}",
             "--without-gossip", "--without-mingle", "-l", "warning"],
            cwd=ROOT, env={**env, "PGAPPNAME": WORKER_APP_NAME}, stdout=out,
            stderr=subprocess.STDOUT,
        )  # fmt: skip


def fanout(args: argparse.Namespace, env: dict[str, str], scripts: str) -> dict[str, Any]:
    from django.conf import settings

    from control_plane.celery import app as celery_app
    from control_plane.fanout import runs
    from tenants.database_roles import owner_connection
    from tenants.models import Isolation, Tenant
    from tests.benchmarks.bench_fanout import BARE_DOWN, BARE_UP, bare_loop, timed_run
    from tests.migrations_sqla.support import BASE_REVISION, TEST_REVISION
    from tests.processes import children, stop_process

    schemas = list(
        Tenant.objects.filter(isolation=Isolation.SCHEMA)
        .exclude(schema_name="public")
        .values_list("schema_name", flat=True)
    )
    owner_url = settings.MIGRATION_DATABASE_URL.replace("postgres://", "postgresql://", 1)
    celery_app.control.purge()
    worker = start_worker(env, args.concurrency, ROOT / ".data" / "worker-bench-scale.log")
    try:
        deadline = time.monotonic() + 120
        while not celery_app.control.ping(timeout=0.5):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit("benchmark worker did not start; see .data/worker-bench-scale.log")
        strategy = {
            "concurrency": args.concurrency,
            "batch_size": args.batch_size,
            "canary": 1,
            "script_location": scripts,
        }
        timed_run(to=BASE_REVISION, **strategy)  # warm the worker up, as a long-lived one is
        print(f"  bare loop over {len(schemas)} schemas ...", file=sys.stderr)
        bare_up = BARE_UP.replace("{up}", TEST_REVISION)
        bare_down = BARE_DOWN.replace("{down}", BASE_REVISION)
        bare_s = bare_loop(owner_url, schemas, args.concurrency, bare_up, split=args.citus)
        bare_loop(owner_url, schemas, args.concurrency, bare_down, split=args.citus)
        print("  fan-out up ...", file=sys.stderr)
        up_s, up = timed_run(to=TEST_REVISION, **strategy)
        if up.status != "succeeded":
            raise SystemExit(f"fan-out run failed: {up.error}")
        with owner_connection() as conn:
            worker_backends = backend_memory(conn, WORKER_APP_NAME)
        worker_rss = rss_mb([worker.pid, *children(worker.pid)])
        noop_s, noop = timed_run(to=TEST_REVISION, **strategy)
        print("  fan-out down ...", file=sys.stderr)
        down_s, down = timed_run(to=BASE_REVISION, allow_downgrade=True, **strategy)
        if down.status != "succeeded":
            raise SystemExit(f"fan-out downgrade failed: {down.error}")
    finally:
        stop_process(worker, timeout=30)
    return {
        "schemas": len(schemas),
        "bare_s": bare_s,
        "up_s": up_s,
        "noop_s": noop_s,
        "noop_skipped": runs.run_counts(noop)["skipped"],
        "down_s": down_s,
        "worker_backends": worker_backends,
        "worker_rss_mb": worker_rss,
    }


# --- 3. API ------------------------------------------------------------------------------------


def api(args: argparse.Namespace, env: dict[str, str], recycle: int) -> dict[str, Any]:
    from tenants.database_roles import owner_connection
    from tests.benchmarks.bench_taskflow_api import Http, Server

    with owner_connection() as conn:
        targets = conn.execute("SELECT host, token, mode FROM public.bench_scale_tokens").fetchall()
    web_env = {
        **env,
        "PGAPPNAME": WEB_APP_NAME,
        "RATE_LIMITS_ENABLED": "false",
        "TASKFLOW_POOL_RECYCLE_SCHEMAS": str(recycle),
    }
    server = Server(web_env, args.workers, args.threads)
    rng = random.Random(args.seed)
    picks = [rng.choice(targets) for _ in range(args.requests)]
    chunks = 5
    per_chunk = len(picks) // chunks
    latencies: dict[str, list[float]] = {"schema": [], "rls": []}
    errors = 0
    first_error: list[str] = []
    curve: list[dict[str, float]] = []
    lock = threading.Lock()
    try:
        for c in range(chunks):
            work = picks[c * per_chunk : (c + 1) * per_chunk]

            def client(work: list[Any] = work) -> None:
                nonlocal errors
                http = Http(server.port, "", "")  # one keep-alive connection per client
                while True:
                    with lock:
                        if not work:
                            return
                        host, token, mode = work.pop()
                    http.headers = {"Host": host, "Authorization": f"Bearer {token}"}
                    try:
                        status, body, ms = http.get(PATH)
                    except OSError as exc:
                        http = Http(server.port, "", "")
                        status, body, ms = 0, str(exc).encode(), 0.0
                    with lock:
                        if status == 200:
                            latencies[mode].append(ms)
                        else:
                            errors += 1
                            first_error.append(f"{host} {status} {body[:300]!r}")

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            with owner_connection() as conn:
                memory = backend_memory(conn, WEB_APP_NAME)
            memory["requests"] = (c + 1) * per_chunk
            memory["web_rss_mb"] = rss_mb(server.worker_pids())
            curve.append(memory)
            print(f"  api (recycle {recycle}): {memory}", file=sys.stderr)
    finally:
        server.stop()
    both = latencies["schema"] + latencies["rls"]
    return {
        "p50": p50(both),
        "p99": statistics.quantiles(both, n=100, method="inclusive")[98],
        "schema_p50": p50(latencies["schema"] or [0.0]),
        "rls_p50": p50(latencies["rls"] or [0.0]),
        "errors": errors,
        "first_error": first_error[:1],
        "requests": len(both),
        "curve": curve,
    }


# --- 4. Catalog --------------------------------------------------------------------------------


def catalog(db: str, port: str) -> dict[str, Any]:
    """Catalog size, and pg_dump --schema-only of the database and of one tenant schema.

    pg_dump takes a lock on every table it dumps, in one transaction: past the server's lock
    table (max_locks_per_transaction x (max_connections + max_prepared_transactions)) it fails
    with "out of shared memory", and long before that it leaves other sessions of a shared
    server none. The whole database is dumped only while its tables take at most half of it.
    """
    from tenants.database_roles import owner_connection

    with owner_connection() as conn:
        relations, tables, capacity, catalog_bytes, db_bytes = conn.execute(
            "SELECT (SELECT count(*) FROM pg_class),"
            " (SELECT count(*) FROM pg_class WHERE relkind IN ('r', 'p', 'S', 'v', 'm', 'f')),"
            " current_setting('max_locks_per_transaction')::int"
            "  * (current_setting('max_connections')::int"
            "     + current_setting('max_prepared_transactions')::int),"
            " (SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c"
            "   JOIN pg_namespace n ON n.oid = c.relnamespace"
            "  WHERE n.nspname = 'pg_catalog' AND c.relkind = 'r'),"
            " pg_database_size(current_database())"
        ).fetchone()  # type: ignore[misc]
        (one,) = conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 't\\_fs%' ORDER BY nspname LIMIT 1"
        ).fetchone()  # type: ignore[misc]

    def dump(*scope: str) -> float:
        started = time.perf_counter()
        subprocess.run(
            ["pg_dump", "--schema-only", "-h", "127.0.0.1", "-p", port, "-U", PGSUPERUSER, "-d", db,
             "-f", os.devnull, *scope],
            check=True,
        )  # fmt: skip
        return time.perf_counter() - started

    return {
        "relations": relations,
        "lockable": tables,
        "lock_capacity": capacity,
        "catalog_mb": int(catalog_bytes) / 2**20,
        "database_mb": int(db_bytes) / 2**20,
        "dump_s": dump() if tables <= capacity / 2 else None,
        "dump_one_s": dump("--schema", one),
    }


# --- Report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def dump_cell(catalog: dict[str, Any]) -> str:
    """The whole-database dump's seconds, or why it was not run (see catalog())."""
    return "no locks" if catalog["dump_s"] is None else f"{catalog['dump_s']:.1f}"


def peak(api_result: dict[str, Any]) -> float:
    """The largest backend's anonymous memory (MB) seen during the requests."""
    return max(m["max_mb"] for m in api_result["curve"])


def summary(value: Any) -> Any:
    """A phase's figures for the progress log, lists of timings as their p50/p95."""
    if isinstance(value, dict):
        return {k: summary(v) for k, v in value.items()}
    if isinstance(value, list) and value and isinstance(value[0], float):
        return {"p50": round(p50(value), 1), "p95": round(p95(value), 1), "n": len(value)}
    if isinstance(value, float):
        return round(value, 2)
    return value


def report(results: dict[str, Any], args: argparse.Namespace) -> str:
    steps = sorted((s for s in results if "load_after" in results[s]), key=int)
    cols = [results[s] for s in steps]
    first, last = cols[0], cols[-1]

    def line(label: str, values: list[str], target: str = "", result: str = "") -> str:
        return f"{label:<52}" + "".join(f"{v:>14}" for v in values) + f"  {target:<20} {result}"

    def ms(v: float) -> str:
        return f"{v:.1f}"

    def ratio(key: str, getter: Any) -> float:
        return float(getter(last[key])) / float(getter(first[key]))

    onboard = {
        path: ratio("onboarding", lambda o, p=path: p50(o[p])) for path in ("spare", "clone", "rls")
    }
    api_ratio = last["api"]["p50"] / first["api"]["p50"]
    vs_bare = last["fanout"]["bare_s"] / last["fanout"]["up_s"]
    memory_ratio = peak(last["api"]) / peak(first["api"])
    rows = [
        line("tenants per mode (schema + rls)", [f"{int(s):,}" for s in steps], "target", "result"),
        line("load average (1 min) when measured", [f"{c['load']:.1f}" for c in cols]),
        line("grow to this step (s)", [f"{c['grow_s']:.0f}" for c in cols]),
    ]
    for path, label in (("spare", "spare ready"), ("clone", "clone path"), ("rls", "rls")):
        rows.append(
            line(
                f"onboarding {label} p50 (ms)",
                [ms(p50(c["onboarding"][path])) for c in cols],
                f"<= {TARGET_ONBOARD_RATIO}x first step" if path != "rls" else "",
                f"{verdict(onboard[path] <= TARGET_ONBOARD_RATIO)} {onboard[path]:.2f}x"
                if path != "rls"
                else f"{onboard[path]:.2f}x",
            )
        )
        rows.append(
            line(f"onboarding {label} p95 (ms)", [ms(p95(c["onboarding"][path])) for c in cols])
        )
    rows += [
        line(
            "no-op fan-out (s)",
            [f"{c['fanout']['noop_s']:.2f}" for c in cols],
            f"<= {TARGET_NOOP_S:g} s",
            verdict(last["fanout"]["noop_s"] <= TARGET_NOOP_S),
        ),
        line(
            f"bare psycopg loop, column + index ({args.concurrency} conns, schemas/s)",
            [f"{c['fanout']['schemas'] / c['fanout']['bare_s']:.0f}" for c in cols],
        ),
        line(
            "platform fan-out, column + index (schemas/s)",
            [f"{c['fanout']['schemas'] / c['fanout']['up_s']:.0f}" for c in cols],
            f">= {TARGET_VS_BARE}x bare",
            f"{verdict(vs_bare >= TARGET_VS_BARE)} {vs_bare:.2f}x",
        ),
        line("  fan-out / bare loop", [f"{c['fanout']['bare_s'] / c['fanout']['up_s']:.2f}x" for c in cols]),
        line("platform fan-out back down (schemas/s)",
             [f"{c['fanout']['schemas'] / c['fanout']['down_s']:.0f}" for c in cols]),
        line("worker backends after fan-out, max anon (MB)",
             [f"{c['fanout']['worker_backends']['max_mb']:.1f}" for c in cols]),
        line("worker processes RSS after fan-out (MB)", [f"{c['fanout']['worker_rss_mb']:.0f}" for c in cols]),
        line(
            "API p50, random tenants (ms)",
            [ms(c["api"]["p50"]) for c in cols],
            f"<= {TARGET_API_RATIO}x first step",
            f"{verdict(api_ratio <= TARGET_API_RATIO)} {api_ratio:.2f}x",
        ),
        line("API p99 (ms)", [ms(c["api"]["p99"]) for c in cols]),
        line("  p50 schema tenants / rls tenants (ms)",
             [f"{c['api']['schema_p50']:.0f}/{c['api']['rls_p50']:.0f}" for c in cols]),
        line("  schema p50 / rls p50 (same run, same load)",
             [f"{c['api']['schema_p50'] / c['api']['rls_p50']:.2f}" for c in cols]),
        line("  requests ok / errors", [f"{c['api']['requests']}/{c['api']['errors']}" for c in cols]),
        line(
            f"web backends, max anon (MB), recycled every {args.recycle_schemas} schemas",
            [f"{peak(c['api']):.1f}" for c in cols],
            f"<= {TARGET_MEMORY_GROWTH}x first step",
            f"{verdict(memory_ratio <= TARGET_MEMORY_GROWTH)} {memory_ratio:.2f}x",
        ),
        line("web backends, max anon (MB), never recycled",
             [f"{peak(c['api_unrecycled']):.1f}" if "api_unrecycled" in c else "-" for c in cols]),
        line("API p50 / p99, never recycled (ms)",
             [f"{c['api_unrecycled']['p50']:.0f}/{c['api_unrecycled']['p99']:.0f}"
              if "api_unrecycled" in c else "-" for c in cols]),
        line("  requests ok / errors, never recycled",
             [f"{c['api_unrecycled']['requests']}/{c['api_unrecycled']['errors']}"
              if "api_unrecycled" in c else "-" for c in cols]),
        line("web backends, sum anon (MB)", [f"{c['api']['curve'][-1]['sum_mb']:.0f}" for c in cols]),
        line("web workers RSS (MB)", [f"{c['api']['curve'][-1]['web_rss_mb']:.0f}" for c in cols]),
        line("catalog: pg_class rows", [f"{c['catalog']['relations']:,}" for c in cols]),
        line("catalog: pg_catalog tables (MB)", [f"{c['catalog']['catalog_mb']:.0f}" for c in cols]),
        line("database size (MB)", [f"{c['catalog']['database_mb']:.0f}" for c in cols]),
        line("pg_dump --schema-only, whole database (s)",
             [dump_cell(c["catalog"]) for c in cols]),
        line("  tables it locks / server lock table",
             [f"{c['catalog']['lockable']:,}/{c['catalog']['lock_capacity']:,}"
              if "lockable" in c["catalog"] else "-" for c in cols]),
        line("pg_dump --schema-only --schema of one tenant (s)",
             [f"{c['catalog']['dump_one_s']:.1f}" if c["catalog"].get("dump_one_s") else "-"
              for c in cols]),
    ]  # fmt: skip
    where = (
        f"Citus cluster (coordinator + 2 workers on this host, port {args.citus_port})"
        if args.citus
        else "one server"
    )
    header = [
        f"Scale curve on {where}: PostgreSQL {last['server']}, {os.cpu_count()} CPUs;"
        f" {args.large} large tenants per mode ({args.large_tasks:,} tasks), the rest small"
        f" ({args.small_tasks} tasks)",
        f"onboarding: {args.onboard} per path per step; API: {args.requests} x GET {PATH} over"
        f" random tenants, {args.clients} clients, gunicorn {args.workers}x{args.threads};"
        f" fan-out: Celery -c {args.concurrency}, batches of {args.batch_size}",
        f"each column measured when the database held that many tenants (steps may come from"
        f" earlier --reuse runs, kept in {results_file(args.database).relative_to(ROOT)});"
        " ratios compare the last step with the first",
        "",
    ]
    curves = ["", "the web's largest backend (anonymous MB) after each fifth of the requests:"]
    for step, c in zip(steps, cols, strict=True):
        for key, label in (("api_unrecycled", "never recycled"), ("api", "recycled")):
            if key in c:
                fifths = " / ".join(f"{m['max_mb']:.1f}" for m in c[key]["curve"])
                curves.append(f"  {int(step):>6,} tenants, {label:<15} {fifths}")
    return "\n".join(header + rows + curves)


# --- Main --------------------------------------------------------------------------------------


def server_version() -> str:
    from tenants.database_roles import owner_connection

    with owner_connection() as conn:
        version = str(conn.execute("SHOW server_version").fetchone()[0])  # type: ignore[index]
        citus = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'citus'"
        ).fetchone()
    return f"{version}, Citus {citus[0]}" if citus else version


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="100,1000,10000")
    parser.add_argument("--large", type=int, default=3, help="large tenants per mode")
    parser.add_argument("--large-tasks", type=int, default=20000)
    parser.add_argument("--small-tasks", type=int, default=5)
    parser.add_argument("--onboard", type=int, default=20, help="timed onboardings per path")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--seed", type=int, default=19)
    parser.add_argument(
        "--grow-connections", type=int, default=2, help="owner connections adding tenants"
    )
    parser.add_argument(
        "--recycle-schemas",
        type=int,
        default=100,
        help="TASKFLOW_POOL_RECYCLE_SCHEMAS of the web (the API is also run with 0: no recycling)",
    )
    parser.add_argument(
        "--citus",
        action="store_true",
        help="run against the Citus cluster of platform/dev.sh citus-start, distributed",
    )
    parser.add_argument("--citus-port", type=int, default=int(os.environ.get("CITUS_PORT", 9700)))
    parser.add_argument("--database", help="default <DB_NAME>_bench_scale (_citus with --citus)")
    parser.add_argument(
        "--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9")
    )
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument(
        "--reuse", action="store_true", help="grow an existing database and keep its results"
    )
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    args.database = args.database or default_database(args.citus)
    port = str(args.citus_port) if args.citus else DB_PORT

    os.chdir(ROOT)
    (ROOT / ".data").mkdir(exist_ok=True)
    store = results_file(args.database)
    env = scale_env(args.database, args.redis_url, port, args.citus)
    reuse = args.reuse and database_exists(args.database, port)
    results: dict[str, Any] = json.loads(store.read_text()) if reuse and store.exists() else {}
    try:
        if not reuse:
            print(f"creating database {args.database} ...", file=sys.stderr)
            if args.citus:
                create_citus_database(args.database, args.citus_port)
            else:
                create_database(args.database)
            # Not when reusing: it would migrate every tenant, and the database is set up.
            subprocess.run(
                [PY, "manage.py", "setup_platform"], cwd=ROOT, env=env,
                check=True, stdout=subprocess.DEVNULL,
            )  # fmt: skip
        os.environ.update(env)
        import django

        django.setup()
        from django.db import connection

        from tests.migrations_sqla.support import make_script_dir

        scripts = make_script_dir(Path(tempfile_dir()) / "scripts")
        for step in steps:
            print(f"step {step}: growing ...", file=sys.stderr)
            result: dict[str, Any] = {"grow_s": grow(step, args), "load": os.getloadavg()[0]}
            result["server"] = server_version()
            phases: list[tuple[str, Any]] = [
                ("onboarding", lambda: onboarding(args.onboard)),
                # Side by side: connections kept whatever they served, then recycled.
                ("api_unrecycled", lambda: api(args, env, 0)),
                ("api", lambda: api(args, env, args.recycle_schemas)),
                ("catalog", lambda: catalog(args.database, port)),
                ("fanout", lambda: fanout(args, env, scripts)),
            ]
            for name, measure in phases:
                print(f"step {step}: {name} ...", file=sys.stderr)
                connection.close()
                result[name] = measure()
                print(f"step {step}: {name} = {json.dumps(summary(result[name]))}", file=sys.stderr)
                results[str(step)] = result  # kept as it comes: a long step may be cut short
                store.write_text(json.dumps(results, indent=1))
            result["load_after"] = os.getloadavg()[0]
            store.write_text(json.dumps(results, indent=1))
            print(report(results, args), flush=True)
    finally:
        if not args.keep and not args.reuse:
            if args.citus:
                drop_citus_database(args.database, args.citus_port)
            else:
                drop_database(args.database)


def tempfile_dir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="bench_scale_")


if __name__ == "__main__":
    main()

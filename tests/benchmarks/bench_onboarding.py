"""Onboarding benchmark: the platform's provisioning against django-tenants' own path.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with superuser `postgres`, Redis at
REDIS_URL; roles from platform/postgres/init.sql):

    .venv/bin/python -m tests.benchmarks.bench_onboarding [--tenants 50] [--warmup 5] [--keep]

What it does, in one run:

1. Creates two throw-away databases with platform/postgres/init.sql (`taskflow_bench` for the
   platform, `taskflow_bench_djt` for django-tenants), dropping leftovers of an earlier run first.
2. Platform: `manage.py setup_platform` (subprocess) migrates the public and template schemas
   (Django tenant apps and, once they exist, the TaskFlow Alembic migrations). If the template
   has no TaskFlow tables yet, the benchmark creates them there as the owner, from the SQL that
   `sqlmigrate` makes of `tests/benchmarks/bench_taskflow` (the header of the table says which).
   Each tenant: `request_onboarding(enqueue=False)` (not timed), then `provision_onboarding(id)`
   timed in-process: everything the worker's task does (load and count the attempt, storage,
   identity rows + status, and on the spare path publishing the refill task, to a queue of the
   benchmark's own that is deleted at the end). Its phases are timed by wrappers around the
   functions it calls (no platform code is changed). Before the timed tenants, `warm_up()` runs
   as in a starting worker process (control_plane.tenancy.tasks) and the first provisioning after it is
   reported apart. A second spare-path row closes Django's connection before each call, as
   Celery's Django fixup does before every task, so it includes opening a connection as a real
   worker does. One more provisioning per path, untimed, is traced (libpq) to count its round
   trips on Django's connection and on the owner connection.
3. django-tenants: a subprocess (`tests.benchmarks.djt_half`, settings
   `tests.benchmarks.djt_settings`, connected as the owner) times `Tenant.save()` with
   `auto_create_schema = True`: CREATE SCHEMA + `migrate_schemas` of the tenant apps
   (contenttypes, taskflow, bench_taskflow), the same tables as Django models and migrations.
   Tenants of the three paths are interleaved (schema, rls, django-tenants, schema, ...), after
   `--warmup` untimed rounds, so that all three see the same machine load.
4. Prints one table with p50/p95, the targets and the ratios, then drops both databases.

Targets: schema mode p50 <= 40 ms, p95 <= 60 ms, and >= 4x faster than the django-tenants path;
rls mode p50 <= 15 ms. Not collected by pytest (`--ignore=tests/benchmarks`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform as stdlib_platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

DB_HOST = os.environ.get("DB_HOST", "127.0.0.1")
DB_PORT = os.environ.get("DB_PORT", "5432")
PGSUPERUSER = os.environ.get("PGSUPERUSER", "postgres")
OWNER_ROLE = os.environ.get("OWNER_ROLE", "taskflow_owner")
OWNER_PASSWORD = os.environ.get("OWNER_PASSWORD", "taskflow_owner")
APP_ROLE = os.environ.get("APP_ROLE", "taskflow_app")
APP_PASSWORD = os.environ.get("APP_PASSWORD", "taskflow_app")
BENCH_DB = "taskflow_bench"
BENCH_QUEUE = "bench_onboarding"
DJT_DB = "taskflow_bench_djt"

TARGET_SCHEMA_P50 = 40.0
TARGET_SCHEMA_P95 = 60.0
TARGET_SPEEDUP = 4.0
TARGET_RLS_P50 = 15.0

ALEMBIC_STAND_IN = (
    "CREATE TABLE alembic_version (version_num varchar(32) NOT NULL,"
    " CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num));"
    "INSERT INTO alembic_version VALUES ('bench_0001');"
)


# --- Databases and subprocesses ----------------------------------------------------------------


def urls(db: str) -> tuple[str, str]:
    app = f"postgres://{APP_ROLE}:{APP_PASSWORD}@{DB_HOST}:{DB_PORT}/{db}"
    owner = f"postgres://{OWNER_ROLE}:{OWNER_PASSWORD}@{DB_HOST}:{DB_PORT}/{db}"
    return app, owner


def bench_env(db: str, settings_module: str) -> dict[str, str]:
    app, owner = urls(db)
    env = os.environ.copy()
    env.update(
        DATABASE_URL=app,
        MIGRATION_DATABASE_URL=owner,
        DJANGO_SETTINGS_MODULE=settings_module,
        DEBUG="false",  # as workers run in production: no query log kept per statement
        CACHE_KEY_PREFIX="tfbench",
        LOG_LEVEL="WARNING",
    )
    return env


def psql(*args: str) -> None:
    env = {**os.environ, "PGOPTIONS": "-c client_min_messages=warning"}
    subprocess.run(
        ["psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", DB_HOST, "-p", DB_PORT,
         "-U", PGSUPERUSER, *args],
        check=True, env=env, stdout=subprocess.DEVNULL, cwd=ROOT,
    )  # fmt: skip


def drop_database(db: str) -> None:
    psql("-d", "postgres", "-c", f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def create_database(db: str) -> None:
    drop_database(db)
    psql(
        "-d", "postgres",
        "-v", f"owner_role={OWNER_ROLE}", "-v", f"owner_password={OWNER_PASSWORD}",
        "-v", f"app_role={APP_ROLE}", "-v", f"app_password={APP_PASSWORD}",
        "-v", f"db_name={db}", "-f", "platform/postgres/init.sql",
    )  # fmt: skip


class DjangoTenantsHalf:
    """The django-tenants half in its own process (its own settings), one command at a time."""

    def __init__(self) -> None:
        self.log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 - closed by close()
        self.proc = subprocess.Popen(
            [PY, "-m", "tests.benchmarks.djt_half"],
            cwd=ROOT, env=bench_env(DJT_DB, "tests.benchmarks.djt_settings"),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True,
        )  # fmt: skip
        self.read()  # {"ready": true} once the public schema is migrated

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.log.seek(0)
            sys.stderr.write(self.log.read())
            raise SystemExit(f"django-tenants half exited with {self.proc.returncode}")
        reply: dict[str, Any] = json.loads(line)
        return reply

    def request(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


# --- Statistics --------------------------------------------------------------------------------


def p50(values: list[float]) -> float:
    return statistics.median(values)


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[94]


# --- Platform half (in this process) -----------------------------------------------------------

OBJECT_COUNTS = """
SELECT count(*) FILTER (WHERE c.relkind = 'r'), count(*) FILTER (WHERE c.relkind = 'i'),
       (SELECT count(*) FROM pg_trigger t JOIN pg_class tc ON tc.oid = t.tgrelid
         WHERE tc.relnamespace = n.oid AND NOT t.tgisinternal),
       (SELECT count(*) FROM pg_proc p WHERE p.pronamespace = n.oid)
FROM pg_namespace n LEFT JOIN pg_class c ON c.relnamespace = n.oid
WHERE n.nspname = %s GROUP BY n.oid
"""


def schema_objects(conn: Any, schema: str) -> dict[str, int]:
    tables, indexes, triggers, functions = conn.execute(OBJECT_COUNTS, [schema]).fetchone()
    return {"tables": tables, "indexes": indexes, "triggers": triggers, "functions": functions}


def prepare_template(owner_url: str, djt: DjangoTenantsHalf) -> tuple[dict[str, int], str]:
    """Make sure the template holds the TaskFlow tables; say where they came from.

    `setup_platform` puts them there once the TaskFlow Alembic migrations exist; before that,
    the benchmark creates them from its Django models (`sqlmigrate`), as the owner.
    """
    import psycopg

    with psycopg.connect(owner_url.replace("postgres://", "postgresql://", 1)) as conn:
        (real,) = conn.execute("SELECT to_regclass('template.projects') IS NOT NULL").fetchone()  # type: ignore[misc]
        if real:
            (head,) = conn.execute("SELECT version_num FROM template.alembic_version").fetchone()  # type: ignore[misc]
            source = f"the real TaskFlow tables, made by setup_platform (Alembic revision {head})"
        else:
            ddl = djt.request("ddl")["sql"]
            conn.execute("SET LOCAL search_path = template")
            # sqlmigrate wraps each migration in BEGIN/COMMIT; run them in this one transaction.
            lines = [ln for ln in ddl.splitlines() if ln.strip() not in ("BEGIN;", "COMMIT;")]
            conn.execute("\n".join(lines) + "\n" + ALEMBIC_STAND_IN)
            conn.commit()
            source = (
                "TaskFlow tables created by the benchmark from tests/benchmarks/bench_taskflow"
                " (sqlmigrate SQL) + an alembic_version row: the real ones have not landed"
            )
        objects = schema_objects(conn, "template")
    if objects["tables"] != 9 or objects["triggers"] != 9:
        raise SystemExit(f"template schema is not as expected: {objects}")
    return objects, source


class Phases:
    """Wall time spent in named functions during one provisioning, via wrappers."""

    def __init__(self) -> None:
        self.current: dict[str, float] = defaultdict(float)
        self.queries = 0

    def wrap(self, module: Any, name: str, label: str) -> None:
        inner: Callable[..., Any] = getattr(module, name)
        phases = self

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                phases.current[label] += (time.perf_counter() - started) * 1000

        setattr(module, name, wrapper)

    def wrap_context(self, module: Any, name: str, label: str) -> None:
        """Like wrap, for a context-manager function: times entering it (a pool checkout)."""
        inner: Callable[..., Any] = getattr(module, name)
        phases = self

        @contextmanager
        def wrapper(*args: Any, **kwargs: Any) -> Iterator[Any]:
            started = time.perf_counter()
            with inner(*args, **kwargs) as value:
                phases.current[label] += (time.perf_counter() - started) * 1000
                yield value

        setattr(module, name, wrapper)

    def count_query(self, execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        self.queries += 1
        return execute(sql, params, many, context)

    @contextmanager
    def measure(self) -> Iterator[dict[str, float]]:
        self.current = defaultdict(float)
        self.queries = 0
        result: dict[str, float] = {}
        yield result
        result.update(self.current)
        result["django_queries"] = self.queries


READY_FOR_QUERY = re.compile(r"^B\t\d+\tReadyForQuery\b", re.MULTILINE)


def traced(onboard: Callable[[], Any]) -> dict[str, int]:
    """Round trips of one extra, untimed onboarding's provision_onboarding, per connection.

    libpq's protocol trace of Django's connection and of the owner connection provisioning
    checks out; every request/response cycle ends with the server's ReadyForQuery, so BEGIN,
    COMMIT and SAVEPOINTs count too. Only provision_onboarding is traced (not the request
    before it, nor the spare refill).
    """
    from django.db import connection
    from psycopg import pq

    import control_plane.tenancy.onboarding as onboarding
    import tenants.provisioning as provisioning

    provision, checkout = onboarding.provision_onboarding, provisioning.owner_connection
    files = {"django": tempfile.TemporaryFile("w+"), "owner": tempfile.TemporaryFile("w+")}  # noqa: SIM115 - closed below

    @contextmanager
    def traced_checkout(*args: Any, **kwargs: Any) -> Iterator[Any]:
        with checkout(*args, **kwargs) as conn:
            conn.pgconn.trace(files["owner"].fileno())
            conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
            try:
                yield conn
            finally:
                conn.pgconn.untrace()

    def traced_provision(onboarding_id: int, *, will_retry: bool = False) -> Any:
        connection.ensure_connection()
        pgconn = connection.connection.pgconn
        pgconn.trace(files["django"].fileno())
        pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            return provision(onboarding_id, will_retry=will_retry)
        finally:
            pgconn.untrace()

    onboarding.provision_onboarding = traced_provision
    provisioning.owner_connection = traced_checkout
    try:
        onboard()
    finally:
        onboarding.provision_onboarding = provision
        provisioning.owner_connection = checkout
    counts = {}
    for name, file in files.items():
        file.seek(0)
        counts[name] = len(READY_FOR_QUERY.findall(file.read()))
        file.close()
    return counts


def run_benchmark(count: int, warmup: int, djt: DjangoTenantsHalf) -> dict[str, Any]:
    import django

    django.setup()
    import psycopg
    from django.conf import settings
    from django.db import connection

    import control_plane.tenancy.onboarding as onboarding
    import tenants.cloning as cloning
    import tenants.provisioning as provisioning
    import tenants.signals as signals

    load = os.getloadavg()
    phases = Phases()
    phases.wrap(onboarding, "provision_storage", "storage")
    phases.wrap_context(provisioning, "owner_connection", "connect")
    phases.wrap(provisioning, "clone_schema", "clone_schema")
    phases.wrap(cloning, "clone_script", "lookup")
    phases.wrap(signals, "forget_hosts", "redis")

    # The refill task a spare-path provisioning sends is published for real, but to a queue of
    # the benchmark's own (dropped at the end), never onto a queue a real worker consumes.
    from control_plane.celery import app as celery_app

    celery_app.conf.task_default_queue = BENCH_QUEUE

    def onboard(slug: str, isolation: str, *, reconnect: bool = False) -> dict[str, float]:
        data = onboarding.validate_onboarding(
            name=f"Bench {slug}",
            slug=slug,
            domain=f"{slug}.bench.localhost",
            isolation=isolation,
            owner_email=f"owner+{slug}@bench.example",
        )
        requested = onboarding.request_onboarding(data=data, enqueue=False)
        if reconnect:
            connection.close()  # as Celery's Django fixup does before every task (task_prerun)
        with connection.execute_wrapper(phases.count_query), phases.measure() as timing:
            started = time.perf_counter()
            onboarding.provision_onboarding(requested.onboarding.pk)
            timing["total"] = (time.perf_counter() - started) * 1000
        return timing

    def djt_tenant(slug: str) -> dict[str, float]:
        return djt.request(f"tenant {slug}")

    from tenants.spares import drop_spares, refill_spares

    def onboard_with_spare(slug: str, *, reconnect: bool = False) -> dict[str, float]:
        """A spare is ready, as the background refill keeps it (the refill is not timed)."""
        settings.SPARE_SCHEMAS = 1
        try:
            refill_spares(1)
            return onboard(slug, "schema", reconnect=reconnect)
        finally:
            settings.SPARE_SCHEMAS = 0

    settings.SPARE_SCHEMAS = 0  # the clone path unless a run asks for a spare

    # As a worker process starts (control_plane.tenancy.tasks.warm_up_provisioning), then its first one.
    started = time.perf_counter()
    provisioning.warm_up()
    warm_up_ms = (time.perf_counter() - started) * 1000
    cold = onboard("scold", "schema")["total"]
    for i in range(warmup):
        onboard(f"sw{i:04d}", "schema")
        onboard_with_spare(f"pw{i:04d}")
        onboard_with_spare(f"qw{i:04d}", reconnect=True)
        onboard(f"rw{i:04d}", "rls")
        djt_tenant(f"djtw{i:04d}")
    results: dict[str, list[dict[str, float]]] = {
        "spare": [], "spare_reconnect": [], "schema": [], "rls": [], "djt": [],
    }  # fmt: skip
    for i in range(count):
        results["spare"].append(onboard_with_spare(f"p{i:04d}"))
        results["spare_reconnect"].append(onboard_with_spare(f"q{i:04d}", reconnect=True))
        results["schema"].append(onboard(f"s{i:04d}", "schema"))
        results["rls"].append(onboard(f"r{i:04d}", "rls"))
        results["djt"].append(djt_tenant(f"djt{i:04d}"))
    round_trips = {
        "spare": traced(lambda: onboard_with_spare("tp0000")),
        "schema": traced(lambda: onboard("ts0000", "schema")),
        "rls": traced(lambda: onboard("tr0000", "rls")),
    }
    with celery_app.connection_for_write() as broker:
        broker.default_channel.queue_delete(BENCH_QUEUE)  # type: ignore[attr-defined]

    drop_spares()
    url = settings.MIGRATION_DATABASE_URL.replace("postgres://", "postgresql://", 1)
    with psycopg.connect(url) as conn:
        objects = schema_objects(conn, "t_s0000")
        if (
            objects != schema_objects(conn, "template")
            or schema_objects(conn, "t_p0000") != objects
        ):
            raise SystemExit(f"clone differs from the template: {objects}")
        server = conn.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
    connection.close()
    return {
        "warm_up_ms": warm_up_ms,
        "round_trips": round_trips,
        "cold_ms": cold,
        "load": load,
        "results": results,
        "objects": objects,
        "djt_objects": djt.request("objects t_djt0000"),
        "server": server,
    }


# --- Report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def row(label: str, values: list[float], target: str = "", result: str = "") -> str:
    return (
        f"{label:<58} {len(values):>4} {p50(values):>9.1f} {p95(values):>9.1f}"
        f" {max(values):>9.1f}  {target:<24} {result}"
    )


def report(platform: dict[str, Any], template: tuple[dict[str, int], str]) -> str:
    schema = platform["results"]["schema"]
    rls = platform["results"]["rls"]
    p_total = [t["total"] for t in platform["results"]["spare"]]
    q_total = [t["total"] for t in platform["results"]["spare_reconnect"]]
    s_total = [t["total"] for t in schema]
    s_clone = [t["storage"] for t in schema]
    s_identity = [a - b for a, b in zip(s_total, s_clone, strict=True)]
    r_total = [t["total"] for t in rls]
    d_save = [t["save_ms"] for t in platform["results"]["djt"]]
    d_create = [t["create_schema_ms"] for t in platform["results"]["djt"]]
    speed50 = p50(d_save) / p50(p_total)
    speed95 = p95(d_save) / p95(p_total)
    clone_speed50 = p50(d_save) / p50(s_total)
    clone50 = p50(d_create) / p50(s_clone)

    def objs(o: dict[str, int]) -> str:
        return f"{o['tables']} tables, {o['indexes']} indexes, {o['triggers']} triggers, {o['functions']} fn"

    width = 58 + 4 + 10 * 3 + 2 + 24 + 5
    lines = [
        f"Onboarding provisioning benchmark: PostgreSQL {platform['server']}, Python "
        f"{stdlib_platform.python_version()}, {os.cpu_count()} CPUs, times in ms (in-process wall time)",
        f"1-min load average: {platform['load'][0]:.2f} before, {os.getloadavg()[0]:.2f} after"
        " (anything else running on this machine shows up in the figures)",
        f"template schema (platform): {objs(template[0])}",
        f"  holding {template[1]}",
        f"tenant schema, platform clone: {objs(platform['objects'])}",
        f"tenant schema, django-tenants:  {objs(platform['djt_objects'])}"
        " (same TaskFlow tables as Django models; no alembic_version)",
        "",
        f"{'path':<58} {'n':>4} {'p50':>9} {'p95':>9} {'max':>9}  {'target':<24} result",
        "-" * width,
        row(
            "platform schema, spare ready: provision_onboarding",
            p_total,
            f"p50<={TARGET_SCHEMA_P50:g} p95<={TARGET_SCHEMA_P95:g}",
            verdict(p50(p_total) <= TARGET_SCHEMA_P50 and p95(p_total) <= TARGET_SCHEMA_P95),
        ),
        row("  the same, opening a connection first", q_total),
        row("platform schema, no spare: provision_onboarding (clone)", s_total),
        row("  clone step alone (provision_storage)", s_clone),
        row("  load + identity rows + status (the rest)", s_identity),
        row(
            "platform rls: provision_onboarding (identity only)",
            r_total,
            f"p50<={TARGET_RLS_P50:g}",
            verdict(p50(r_total) <= TARGET_RLS_P50),
        ),
        row("django-tenants: Tenant.save(), auto_create_schema=True", d_save),
        row("  create_schema (CREATE SCHEMA + migrate_schemas)", d_create),
        "-" * width,
        f"worker process start: warm_up() (clone script + revision tables) {platform['warm_up_ms']:.1f} ms;"
        f" the first schema-mode provisioning after it {platform['cold_ms']:.1f} ms (neither is in the"
        " figures above)",
        "a worker keeps its connection between tasks (CELERY_DB_REUSE_MAX); with reuse off, Celery's"
        " fixup opens one per task (the row 'opening a connection first')",
        "",
        "ratios, measured side by side in this run:",
        f"  django-tenants save() p50 / platform schema p50 = {speed50:5.1f}x   target >= "
        f"{TARGET_SPEEDUP:g}x  {verdict(speed50 >= TARGET_SPEEDUP)}",
        f"  django-tenants save() p95 / platform schema p95 = {speed95:5.1f}x",
        f"  django-tenants save() p50 / platform schema p50 without a spare (cloning) = {clone_speed50:5.1f}x",
        f"  django-tenants create_schema p50 / platform clone step p50 = {clone50:5.1f}x",
        f"  platform schema p50 / platform rls p50 = {p50(s_total) / p50(r_total):5.1f}x",
        "",
        "where the time goes (platform; p50 and p95 in ms; wrappers around the functions called):",
    ]
    breakdown: list[tuple[str, str, Callable[[dict[str, float]], float]]] = [
        ("schema", "clone step (provision_storage)", lambda t: t["storage"]),
        ("schema", "  owner connection (from the per-process pool)", lambda t: t.get("connect", 0.0)),
        ("schema", "  clone_schema", lambda t: t.get("clone_schema", 0.0)),
        ("schema", "    script (re)generation (only when the template moved)", lambda t: t.get("lookup", 0.0)),
        ("schema", "    drop-leftover + guard + DDL + grant, one round trip",
         lambda t: t.get("clone_schema", 0.0) - t.get("lookup", 0.0)),
        ("schema", "load + identity rows + status (the rest)", lambda t: t["total"] - t["storage"]),
        ("schema", "  of which Redis forget_hosts (tenant/domain signals)", lambda t: t.get("redis", 0.0)),
        ("rls", "all of it", lambda t: t["total"]),
        ("rls", "  revisions of the shared schema (provision_storage)", lambda t: t["storage"]),
        ("rls", "  of which Redis forget_hosts (tenant/domain signals)", lambda t: t.get("redis", 0.0)),
    ]  # fmt: skip
    for mode, label, value in breakdown:
        values = [value(t) for t in (schema if mode == "schema" else rls)]
        lines.append(f"  {mode:<6} {label:<56} {p50(values):>7.2f} {p95(values):>7.2f}")
    for mode, timings in (("schema", schema), ("rls", rls)):
        queries = [t["django_queries"] for t in timings]
        lines.append(f"  {mode:<6} {'Django statements per provisioning':<56} {p50(queries):>7.0f}")
    lines.append(
        "round trips to PostgreSQL of one more provisioning per path (libpq trace; BEGIN/COMMIT"
        " included; Redis not included):"
    )
    for path, counts in platform["round_trips"].items():
        lines.append(
            f"  {path:<6} {counts['django']} on Django's connection + {counts['owner']} on the owner's"
            f" = {counts['django'] + counts['owner']}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=50, help="timed tenants per path and mode")
    parser.add_argument("--warmup", type=int, default=5, help="untimed tenants first, per path")
    parser.add_argument("--keep", action="store_true", help="keep the two databases afterwards")
    args = parser.parse_args()

    os.chdir(ROOT)
    try:
        print(f"creating databases {BENCH_DB} and {DJT_DB} ...", file=sys.stderr)
        create_database(BENCH_DB)
        create_database(DJT_DB)
        env = bench_env(BENCH_DB, "control_plane.settings")
        subprocess.run(
            [PY, "manage.py", "setup_platform"], cwd=ROOT, env=env, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        djt = DjangoTenantsHalf()
        try:
            template = prepare_template(env["MIGRATION_DATABASE_URL"], djt)
            print(
                f"{args.tenants} tenants each: platform schema, platform rls, django-tenants ...",
                file=sys.stderr,
            )
            os.environ.update(env)  # before django.setup(): settings read the environment
            result = run_benchmark(args.tenants, args.warmup, djt)
        finally:
            djt.close()
        print(report(result, template))
    finally:
        if not args.keep:
            drop_database(BENCH_DB)
            drop_database(DJT_DB)


if __name__ == "__main__":
    main()

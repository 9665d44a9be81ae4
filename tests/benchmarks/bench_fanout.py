"""Migration fan-out benchmark: the platform's fan-out against a bare loop and django-tenants.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with superuser `postgres`, Redis):

    .venv/bin/python -m tests.benchmarks.bench_fanout [--tenants 1000] [--concurrency 2]
        [--batch-size 50] [--redis-url redis://127.0.0.1:6379/9] [--keep]

One migration, a nullable column and an index on `tasks` (a test Alembic revision on top of
the real head, in a temporary copy of migrations_sqla/versions; the equivalent Django migration 0003 for django-tenants), over
`--tenants` schemas cloned from the template, in one run:

1. bare psycopg loop: `--concurrency` threads, one connection each, one transaction per schema
   (SET LOCAL search_path, ALTER TABLE, CREATE INDEX, version update): the limit. Then reverted.
2. platform fan-out: `start_run` through a real Celery worker (`-c concurrency`), concurrency and
   batch size as given, template first and one canary: wall time from start to the run's end
   (its finished_at, not when a polling loop noticed it).
3. no-op run (every tenant already at the target, skipped from recorded revisions) and a
   --verify run (reads every schema's version tables).
4. django-tenants: its own database, the same number of schemas (one made by django-tenants,
   the rest cloned from it), `migrate_schemas --tenant --executor=multiprocessing` with
   TENANT_MULTIPROCESSING_MAX_PROCESSES = concurrency, on the equivalent Django migration.

Targets: fan-out >= 0.5x the bare loop's schemas/s, >= 4x django-tenants, no-op run <= 1 s.
Makes and drops its own databases (`taskflow_bench_fanout`, `taskflow_bench_fanout_djt`).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from tests.benchmarks.bench_onboarding import (
    PY,
    ROOT,
    bench_env,
    create_database,
    drop_database,
)

BENCH_DB = os.environ.get("BENCH_DB_NAME", "taskflow_bench_fanout")
DJT_DB = BENCH_DB + "_djt"
TARGET_VS_BARE = 0.75
TARGET_VS_DJT = 4.0
TARGET_NOOP_S = 1.0
ROUNDS = 2

BARE_UP = (
    "BEGIN; SELECT set_config('search_path', %(path)s, true);"
    "ALTER TABLE tasks ADD COLUMN estimate integer;"
    "CREATE INDEX tasks_estimate ON tasks (estimate);"
    "UPDATE alembic_version SET version_num = '{up}'; COMMIT;"
)
BARE_DOWN = (
    "BEGIN; SELECT set_config('search_path', %(path)s, true);"
    "DROP INDEX tasks_estimate; ALTER TABLE tasks DROP COLUMN estimate;"
    "UPDATE alembic_version SET version_num = '{down}'; COMMIT;"
)

DJT_MIGRATION = """
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("bench_taskflow", "0002_history_triggers")]
    operations = [
        migrations.AddField("task", "estimate", models.IntegerField(null=True, blank=True)),
        migrations.AddIndex("task", models.Index(fields=["estimate"], name="tasks_estimate")),
    ]
"""

DJT_SETTINGS = """
from tests.benchmarks.djt_settings import *  # noqa: F403
MIGRATION_MODULES = {{"bench_taskflow": "fanout_bench_migrations"}}
TENANT_MULTIPROCESSING_MAX_PROCESSES = {processes}
"""


# --- Bare loop ---------------------------------------------------------------------------------


def bare_loop(
    owner_url: str, schemas: list[str], concurrency: int, statement: str, *, split: bool = False
) -> float:
    """Apply `statement` to every schema over `concurrency` connections; seconds taken.

    `split` sends its statements one per query (a Citus coordinator refuses a multi-statement
    string on a distributed schema; the platform's fan-out sends one per query there too)."""
    import psycopg

    work = list(schemas)
    lock = threading.Lock()

    def worker() -> None:
        with psycopg.connect(owner_url, autocommit=True) as conn:
            while True:
                with lock:
                    if not work:
                        return
                    schema = work.pop()
                script = statement.replace("%(path)s", f"'\"{schema}\", public'")
                for part in [p for p in script.split(";") if p.strip()] if split else [script]:
                    conn.execute(part.encode())

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


# --- Tenants with data ---------------------------------------------------------------------------

POPULATE = (
    # The tenant's id sequence (tenants.provisioning makes it; these tenants were only cloned).
    "CREATE SEQUENCE IF NOT EXISTS public.tenant_%(tenant)s_ids AS bigint;"
    "BEGIN; SELECT set_config('search_path', %(path)s, true),"
    " set_config('app.tenant_id', '%(tenant)s', true);"
    "WITH project AS (INSERT INTO projects (tenant_id, key, name, description)"
    " VALUES (%(tenant)s::bigint, 'BENCH', 'Bench project', 'Tasks of a populated tenant')"
    " RETURNING id)"
    " INSERT INTO tasks (tenant_id, project_id, title, description, status, priority, due_date)"
    " SELECT %(tenant)s::bigint, project.id, 'Task ' || g,"
    " 'Description of task ' || g || ', as wide as a real one: ' || repeat('lorem ipsum ', 12),"
    " (ARRAY['todo', 'in_progress', 'done', 'cancelled'])[1 + g %% 4], g %% 5,"
    " date '2030-01-01' + g %% 365 FROM project, generate_series(1, %(rows)s) g; COMMIT;"
)


def populate(owner_url: str, tenants: list[Any], rows: int, large: int, large_rows: int) -> int:
    """A project and `rows` tasks (with their history) in every tenant, `large_rows` in the
    first `large`; then VACUUM ANALYZE, so both paths meet the same table state."""
    import psycopg

    work = [(t, large_rows if i < large else rows) for i, t in enumerate(tenants)]
    lock = threading.Lock()

    def worker() -> None:
        with psycopg.connect(owner_url, autocommit=True) as conn:
            while True:
                with lock:
                    if not work:
                        return
                    tenant, count = work.pop()
                statement = (
                    POPULATE.replace("%(path)s", f"'\"{tenant.schema_name}\", public'")
                    .replace("%(tenant)s", str(int(tenant.pk)))
                    .replace("%(rows)s", str(int(count)))
                    .replace("%%", "%")
                )
                conn.execute(statement.encode())

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    superuser = owner_url.rsplit("@", 1)
    with psycopg.connect(
        f"postgresql://postgres@{superuser[1]}", autocommit=True
    ) as conn:  # VACUUM every schema's tables, not only the owner's
        conn.execute("VACUUM (ANALYZE)")
    return rows * (len(tenants) - large) + large_rows * min(large, len(tenants))


# --- django-tenants half (a subprocess with its own settings) ------------------------------------


def djt_setup(count: int) -> dict[str, Any]:
    """One tenant made by django-tenants itself, then `count - 1` clones of it with their rows."""
    from django.core.management import call_command

    from tenants.cloning import clone_schema
    from tenants.database_roles import app_role_name, owner_connection
    from tenants.models import Isolation, Tenant, TenantStatus

    call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
    source = Tenant(
        name="djt source", slug="d0000", schema_name="t_d0000",
        isolation=Isolation.SCHEMA, status=TenantStatus.ACTIVE,
    )  # fmt: skip
    source.auto_create_schema = True
    source.save(verbosity=0)
    rows = [
        Tenant(
            name=f"djt {i}",
            slug=f"d{i:04d}",
            schema_name=f"t_d{i:04d}",
            isolation=Isolation.SCHEMA,
            status=TenantStatus.ACTIVE,
        )
        for i in range(1, count)
    ]
    Tenant.objects.bulk_create(rows)
    with owner_connection(autocommit=True) as conn:
        for tenant in rows:
            clone_schema(conn, tenant.schema_name, source="t_d0000", grant_to=app_role_name())
    return {"tenants": Tenant.objects.exclude(schema_name="public").count()}


def djt_migrate() -> dict[str, Any]:
    from django.core.management import call_command

    started = time.perf_counter()
    call_command(
        "migrate_schemas", tenant=True, executor="multiprocessing", interactive=False, verbosity=0
    )
    return {"seconds": time.perf_counter() - started}


def djt_phase(phase: str, count: int) -> None:
    import django

    replies = sys.stdout
    sys.stdout = sys.stderr
    django.setup()
    reply = djt_setup(count) if phase == "setup" else djt_migrate()
    replies.write(json.dumps(reply) + "\n")


def run_djt(phase: str, count: int, env: dict[str, str]) -> dict[str, Any]:
    out = subprocess.run(
        [PY, "-m", "tests.benchmarks.bench_fanout", "--djt-phase", phase, "--tenants", str(count)],
        cwd=ROOT, env=env, capture_output=True, text=True,
    )  # fmt: skip
    if out.returncode != 0:
        sys.stderr.write(out.stderr[-5000:])
        raise SystemExit(f"django-tenants {phase} failed")
    reply: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return reply


# --- Platform half (this process, and a real Celery worker) --------------------------------------


def start_worker(env: dict[str, str], concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [PY, "-m", "celery", "-A", "control_plane", "worker", "-Q", "migrations",
             "-c", str(concurrency), "-n", f"bench-fanout@{os.getpid()}",
             "--without-gossip", "--without-mingle", "-l", "warning"],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def chunk_gaps(run: Any) -> list[float]:
    """Milliseconds each lane stood idle between two chunks of its tenants: from the last
    outcome of a chunk to the claim of the next (a chunk's tenants share their started_at, the
    moment they were claimed), over every batch of the run."""
    gaps: list[float] = []
    by_batch: dict[int, dict[Any, Any]] = {}
    for batch, started, finished in run.steps.filter(
        tenant__isnull=False, batch__isnull=False, started_at__isnull=False
    ).values_list("batch", "started_at", "finished_at"):
        chunks = by_batch.setdefault(batch, {})
        last = chunks.get(started)
        chunks[started] = finished if last is None or (finished and finished > last) else last
    for chunks in by_batch.values():
        ordered = sorted(chunks.items())
        for (_start, end), (start, _end) in itertools.pairwise(ordered):
            if end is not None:
                gaps.append((start - end).total_seconds() * 1000)
    return sorted(gaps)


def gap_summary(gaps: list[float]) -> str:
    if not gaps:
        return "no chunk boundaries"
    return (
        f"{len(gaps)} chunk boundaries, idle median {gaps[len(gaps) // 2]:.1f} ms,"
        f" max {gaps[-1]:.1f} ms"
    )


def timed_run(**options: Any) -> tuple[float, Any]:
    """Seconds from start_run to the run's own finished_at (stamped by the worker that
    settled it, on this machine's clock), and the run: the waiting loop's polling interval
    is not counted, as the bare loop's time has none."""
    from control_plane.fanout import runs
    from tests.fanout.support import wait_for_run

    started = time.time()
    run = runs.start_run(**options)
    run = wait_for_run(run.pk, timeout=1800)
    assert run.finished_at is not None
    return run.finished_at.timestamp() - started, run


def platform_half(args: argparse.Namespace, env: dict[str, str], work: Path) -> dict[str, Any]:
    import django

    os.environ.update(env)
    django.setup()
    scripts = write_scripts(work / "scripts")
    from django.conf import settings

    from control_plane.celery import app as celery_app
    from control_plane.fanout import runs
    from tests.migrations_sqla.support import (
        BASE_REVISION,
        TEST_REVISION,
        make_tenants,
        schema_state,
    )

    print(f"cloning {args.tenants} tenant schemas ...", file=sys.stderr)
    tenants = make_tenants("b", args.tenants)
    schemas = [t.schema_name for t in tenants]
    owner_url = settings.MIGRATION_DATABASE_URL.replace("postgres://", "postgresql://", 1)
    rows = 0
    if args.tasks_per_tenant or args.large_tenants:
        print(
            f"populating: {args.tasks_per_tenant} tasks per tenant, {args.large_tenants} tenants"
            f" of {args.large_tasks:,} ...",
            file=sys.stderr,
        )
        rows = populate(
            owner_url, tenants, args.tasks_per_tenant, args.large_tenants, args.large_tasks
        )

    celery_app.control.purge()
    worker = start_worker(env, args.concurrency, ROOT / ".data" / "worker-bench-fanout.log")
    try:
        deadline = time.monotonic() + 60
        while not celery_app.control.ping(timeout=0.5):
            if time.monotonic() > deadline or worker.poll() is not None:
                raise SystemExit(
                    "benchmark worker did not start; see .data/worker-bench-fanout.log"
                )
        strategy = {
            "concurrency": args.concurrency,
            "batch_size": args.batch_size,
            "canary": 1,
            "script_location": scripts,
        }
        bare_up = BARE_UP.replace("{up}", TEST_REVISION)
        bare_down = BARE_DOWN.replace("{down}", BASE_REVISION)
        # Workers are long-lived: warm this one up (imports, script directory, migration
        # loader) with a no-op run, as a worker that has served any task before would be.
        timed_run(to=BASE_REVISION, **strategy)
        bare_times, fanout_times = [], []
        for round_ in range(ROUNDS):  # alternate, so both see the machine's changing load
            print(f"round {round_ + 1}: bare psycopg loop ...", file=sys.stderr)
            bare_times.append(bare_loop(owner_url, schemas, args.concurrency, bare_up))
            assert set(schema_state(schemas).values()) == {(TEST_REVISION, True)}
            bare_loop(owner_url, schemas, args.concurrency, bare_down)
            assert set(schema_state(schemas).values()) == {(BASE_REVISION, False)}
            print(f"round {round_ + 1}: platform fan-out ...", file=sys.stderr)
            seconds, run = timed_run(to=TEST_REVISION, **strategy)
            if run.status != "succeeded":
                raise SystemExit(f"fan-out run failed: {run.error}")
            assert set(schema_state(schemas).values()) == {(TEST_REVISION, True)}
            fanout_times.append(seconds)
            gaps = chunk_gaps(run)
            counts = runs.run_counts(run)
            template_ms = run.steps.get(schema_name="template").duration_ms
            noop_s, noop = timed_run(to=TEST_REVISION, **strategy)
            verify_s, verified = timed_run(to=TEST_REVISION, verify=True, **strategy)
            down_s, down = timed_run(to=BASE_REVISION, allow_downgrade=True, **strategy)
            assert set(schema_state(schemas).values()) == {(BASE_REVISION, False)}
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    bare_s, fanout_s = min(bare_times), min(fanout_times)
    up_s = fanout_times[-1]
    return {
        "bare_s": bare_s,
        "fanout_s": fanout_s,
        "counts": counts,
        "template_ms": template_ms,
        "noop_s": noop_s,
        "noop_skipped": runs.run_counts(noop)["skipped"],
        "verify_s": verify_s,
        "verify_status": verified.status,
        "down_s": down_s,
        "down_status": down.status,
        "up_s": up_s,
        "up_status": "succeeded",
        "bare_times": bare_times,
        "fanout_times": fanout_times,
        "server": _server_version(owner_url),
        "rows": rows,
        "gaps": gap_summary(gaps),
    }


def _server_version(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SHOW server_version").fetchone()
        return str(row[0]) if row else "?"


# --- Report ------------------------------------------------------------------------------------


def report(args: argparse.Namespace, result: dict[str, Any], djt_s: float, load: float) -> str:
    n = args.tenants
    bare, fanout = n / result["bare_s"], n / result["fanout_s"]
    djt = n / djt_s if djt_s else float("nan")
    vs_bare, vs_djt = fanout / bare, fanout / djt

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    line = "{:<58} {:>8} {:>9} {:>10}  {:<22} {}"
    rows = [
        line.format("path", "schemas", "seconds", "schemas/s", "target", "result"),
        line.format(
            f"bare psycopg loop ({args.concurrency} connections)",
            n, f"{result['bare_s']:.2f}", f"{bare:.0f}", "(the limit)", "",
        ),
        line.format(
            f"platform fan-out (Celery -c {args.concurrency}, batches of {args.batch_size})",
            n, f"{result['fanout_s']:.2f}", f"{fanout:.0f}", f">= {TARGET_VS_BARE}x bare",
            f"{verdict(vs_bare >= TARGET_VS_BARE)} {vs_bare:.2f}x",
        ),
        line.format(
            f"django-tenants migrate_schemas, multiprocessing x{args.concurrency}",
            n, f"{djt_s:.2f}", f"{djt:.0f}", f"fan-out >= {TARGET_VS_DJT}x",
            f"{verdict(vs_djt >= TARGET_VS_DJT)} {vs_djt:.1f}x",
        ),
        line.format(
            "no-op fan-out run (skipped from recorded revisions)",
            n, f"{result['noop_s']:.2f}", "-", f"<= {TARGET_NOOP_S:.0f} s",
            f"{verdict(result['noop_s'] <= TARGET_NOOP_S)} ({result['noop_skipped']} skipped)",
        ),
        line.format(
            "--verify run (reads every schema's version tables)",
            n, f"{result['verify_s']:.2f}", f"{n / result['verify_s']:.0f}", "", result["verify_status"],
        ),
        line.format(
            "fan-out downgrade to the base revision", n, f"{result['down_s']:.2f}",
            f"{n / result['down_s']:.0f}", "", result["down_status"],
        ),
        line.format(
            "fan-out upgrade to the test revision again (last round)", n, f"{result['up_s']:.2f}",
            f"{n / result['up_s']:.0f}", "", result["up_status"],
        ),
    ]  # fmt: skip
    header = [
        f"Migration fan-out benchmark: PostgreSQL {result['server']}, {os.cpu_count()} CPUs,"
        f" {n} tenant schemas, concurrency {args.concurrency}",
        "migration: nullable column tasks.estimate + index tasks_estimate (a test Alembic revision;"
        " Django AddField + AddIndex for django-tenants)",
        f"data: {result['rows']:,} tasks in the platform's schemas ({args.tasks_per_tenant} per"
        f" tenant, {args.large_tenants} large tenants of {args.large_tasks:,}); django-tenants'"
        " schemas are empty" + (" (not run: --no-djt)" if not djt_s else ""),
        f"1-min load average {load:.2f} before, {os.getloadavg()[0]:.2f} after"
        " (other work on this machine shows up in the figures)",
        f"fan-out wall time includes the template ({result['template_ms']:.0f} ms), one canary"
        f" batch and bookkeeping; tenants: {result['counts']}",
        f"best of {ROUNDS} alternating rounds: bare loop "
        + ", ".join(f"{t:.2f}" for t in result["bare_times"])
        + " s; fan-out "
        + ", ".join(f"{t:.2f}" for t in result["fanout_times"])
        + " s (worker warmed up by a no-op run first)",
        f"lanes between chunks (last round's upgrade): {result['gaps']}",
        "",
    ]
    return "\n".join(header + rows)


def write_scripts(folder: Path) -> str:
    from tests.migrations_sqla.support import make_script_dir

    return make_script_dir(folder)


def write_djt_package(folder: Path, processes: int) -> None:
    package = folder / "fanout_bench_migrations"
    package.mkdir(parents=True)
    source = ROOT / "tests" / "benchmarks" / "bench_taskflow" / "migrations"
    for name in ("__init__.py", "0001_initial.py", "0002_history_triggers.py"):
        shutil.copy(source / name, package)
    (folder / "fanout_djt_settings.py").write_text(DJT_SETTINGS.format(processes=processes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tenants", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/9")
    parser.add_argument("--tasks-per-tenant", type=int, default=200)
    parser.add_argument("--large-tenants", type=int, default=5)
    parser.add_argument("--large-tasks", type=int, default=100_000)
    parser.add_argument("--no-djt", action="store_true", help="skip the django-tenants half")
    parser.add_argument("--keep", action="store_true", help="keep the databases afterwards")
    parser.add_argument("--djt-phase", choices=("setup", "migrate"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.djt_phase:
        djt_phase(args.djt_phase, args.tenants)
        return

    os.chdir(ROOT)
    load = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="bench_fanout_"))
    try:
        print(f"creating databases {BENCH_DB} and {DJT_DB} ...", file=sys.stderr)
        create_database(BENCH_DB)
        create_database(DJT_DB)
        env = bench_env(BENCH_DB, "control_plane.settings")
        env.update(REDIS_URL=args.redis_url, CACHE_KEY_PREFIX="tfbenchfo")
        subprocess.run(
            [PY, "manage.py", "setup_platform"], cwd=ROOT, env=env, check=True,
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

        write_djt_package(work, args.concurrency)
        djt_env = bench_env(DJT_DB, "fanout_djt_settings")
        djt_env.update(
            REDIS_URL=args.redis_url,
            CACHE_KEY_PREFIX="tfbenchfodjt",
            PYTHONPATH=os.pathsep.join([str(work), str(ROOT)]),
        )
        djt_s = 0.0
        if not args.no_djt:
            print(f"django-tenants: {args.tenants} schemas ...", file=sys.stderr)
            run_djt("setup", args.tenants, djt_env)
            (work / "fanout_bench_migrations" / "0003_estimate.py").write_text(DJT_MIGRATION)
            print("django-tenants migrate_schemas ...", file=sys.stderr)
            djt_s = float(run_djt("migrate", args.tenants, djt_env)["seconds"])

        result = platform_half(args, env, work)
        print(report(args, result, djt_s, load))
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if not args.keep:
            drop_database(BENCH_DB)
            drop_database(DJT_DB)


if __name__ == "__main__":
    main()

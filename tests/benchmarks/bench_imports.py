"""Bulk import benchmark: a CSV through the API and a real worker against `psql \\copy`.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with superuser `postgres`, Redis at
REDIS_URL; roles from platform/postgres/init.sql):

    .venv/bin/python -m tests.benchmarks.bench_imports [--rows 1000000] [--rss-rows 10000000]
        [--executemany-sample 100000] [--orm-sample 10000] [--keep]

What it does, in one run:

1. Creates a throw-away database (`taskflow_bench_imports`) with platform/postgres/init.sql and
   `manage.py setup_platform` (subprocess), then starts gunicorn (1 process) and one Celery
   worker (prefork, 1 child, queue imports) on it, with Redis database 8 (BENCH_REDIS_URL).
2. Generates a CSV of --rows rows in the import's columns, and the same rows in the tasks
   table's own columns for the reference.
3. Times, each into the empty tasks table of a fresh schema-mode tenant (same indexes, same
   foreign key):
   - reference: `psql \\copy` of the table-form file with the table's history triggers disabled
     (run before and after the imports; the mean is the reference);
   - import, new rows: POST /api/v1/imports (the file streamed over HTTP), until the worker has
     committed (history written by the statement-level triggers);
   - import, every row an update: the same external ids with a new title, into that tenant;
   - import, new rows, with the history triggers disabled (a diagnostic: the pipeline's own cost);
   - psycopg executemany and SQLAlchemy ORM add_all + flush of a sample, extrapolated (history
     triggers disabled, like the reference).
4. Worker peak RSS (VmHWM of the pool child) during the --rows import, and on a fresh worker
   for a --rss-rows file that is read, staged and validated in full and then rejected by its
   last row (all-or-nothing): every row passes through the worker; the write itself runs in
   PostgreSQL and never touches worker memory. `--rss-full` imports that file for real instead.
5. Prints one table with rows/s, ratios to `\\copy` and the targets, then drops the database.

Targets: new rows >= 0.55x and an all-update re-import >= 0.40x of `\\copy`, history included;
worker peak RSS <= 200 MB for a 10,000,000-row file. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import os
import platform as stdlib_platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.bench_onboarding import create_database, drop_database, psql, urls
from tests.processes import free_port, stop_process

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
BIN = Path(PY).parent

# Its own Redis database: the bench purges the queues at start (9 is the other benchmarks').
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
BENCH_DB = "taskflow_bench_imports"

TARGET_NEW = 0.55
TARGET_UPDATE = 0.40
TARGET_RSS_MB = 200.0
STATUSES = ("todo", "in_progress", "done", "cancelled")
TABLE_COLUMNS = (
    "tenant_id, project_id, external_id, title, description, status, priority, assignee_id,"
    " due_date"
)


# --- Environment ----------------------------------------------------------------------------------


def bench_env(upload_dir: Path) -> dict[str, str]:
    app, owner = urls(BENCH_DB)
    env = os.environ.copy()
    env.update(
        DATABASE_URL=app,
        MIGRATION_DATABASE_URL=owner,
        DJANGO_SETTINGS_MODULE="control_plane.settings",
        REDIS_URL=REDIS_URL,
        CACHE_KEY_PREFIX="tfbenchimp",
        DEBUG="false",
        LOG_LEVEL="WARNING",
        IMPORT_UPLOAD_DIR=str(upload_dir),
    )
    return env


def create_bench_database(env: dict[str, str]) -> None:
    create_database(BENCH_DB)
    subprocess.run(
        [PY, "manage.py", "setup_platform"], cwd=ROOT, env=env, check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


class Service:
    """A subprocess (gunicorn, celery) with its log in a temporary file."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.log = tempfile.NamedTemporaryFile(prefix="bench-imports-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            args, cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)
        self.log.close()


def start_web(env: dict[str, str]) -> tuple[Service, int]:
    port = free_port()
    web = Service(
        [str(BIN / "gunicorn"), "control_plane.wsgi", "-b", f"127.0.0.1:{port}", "-w", "1",
         "--timeout", "900"],
        env,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return web, port
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"gunicorn did not start; see {web.log.name}")


def start_worker(env: dict[str, str]) -> Service:
    from control_plane.celery import app

    name = f"bench-imports-{time.monotonic_ns()}@%h"
    worker = Service(
        [PY, "-m", "celery", "-A", "control_plane", "worker", "-Q", "imports", "-c", "1",
         "-n", name, "--without-gossip", "--without-mingle", "-l", "warning"],
        env,
    )  # fmt: skip
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if app.control.ping(timeout=0.5) and pool_child(worker) is not None:
            return worker
    raise SystemExit(f"worker did not start; see {worker.log.name}")


def pool_child(worker: Service) -> int | None:
    pid = worker.proc.pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


# --- Data -----------------------------------------------------------------------------------------


def row_values(i: int, title: str) -> tuple[Any, ...]:
    return (
        f"EXT-{i:08d}", f"{title} {i}", f"Description of task {i}, imported in bulk",
        STATUSES[i % 4], i % 5, f"2030-{1 + i % 12:02d}-{1 + i % 28:02d}",
    )  # fmt: skip


def write_import_csv(path: Path, rows: int, title: str = "Task", bad_last: bool = False) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            ("external_id", "project", "title", "description", "status", "priority", "due_date")
        )
        for i in range(rows):
            ext, name, description, status, priority, due = row_values(i, title)
            project = "NOPE" if bad_last and i == rows - 1 else "P1"
            writer.writerow((ext, project, name, description, status, priority, due))


def write_table_csv(path: Path, rows: int, tenant_id: int, project_id: int) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        for i in range(rows):
            ext, name, description, status, priority, due = row_values(i, "Task")
            writer.writerow(
                (tenant_id, project_id, ext, name, description, status, priority, "", due)
            )


def table_rows(count: int, tenant_id: int, project_id: int) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(count):
        ext, name, description, status, priority, due = row_values(i, "Task")
        rows.append((tenant_id, project_id, ext, name, description, status, priority, None, due))
    return rows


# --- Measurements ---------------------------------------------------------------------------------


@dataclass
class Tenant:
    slug: str
    tenant_id: int
    schema: str
    project_id: int
    token: str


def new_tenant() -> Tenant:
    from taskflow.models import Project
    from tenants.binding import binding_for, tenant_session
    from tests.taskflow.conftest import provisioned_tenant

    fixture = provisioned_tenant()
    binding = binding_for(fixture.tenant)
    with tenant_session(binding) as session:
        project = Project(tenant_id=fixture.tenant.pk, key="P1", name="Bench", description="")
        session.add(project)
        session.flush()
        project_id = project.id
    return Tenant(
        fixture.tenant.slug, fixture.tenant.pk, binding.schema, project_id, fixture.tokens["member"]
    )


def owner_conn(tenant_id: int | None = None) -> Any:
    """A direct owner connection (never pooled); row-level security is forced on the owner too,
    so reading or writing a tenant's rows names the tenant for the session."""
    import psycopg

    conn = psycopg.connect(
        urls(BENCH_DB)[1].replace("postgres://", "postgresql://", 1), autocommit=True
    )
    if tenant_id is not None:
        conn.execute("SELECT set_config('app.tenant_id', %s, false)", (str(tenant_id),))
    return conn


def set_history_triggers(tenant: Tenant, enabled: bool) -> None:
    with owner_conn() as conn:
        action = "ENABLE" if enabled else "DISABLE"
        conn.execute(f'ALTER TABLE "{tenant.schema}".tasks {action} TRIGGER USER')


def count_tasks(tenant: Tenant) -> tuple[int, int]:
    with owner_conn(tenant.tenant_id) as conn:
        tasks = conn.execute(f'SELECT count(*) FROM "{tenant.schema}".tasks').fetchone()[0]
        history = conn.execute(f'SELECT count(*) FROM "{tenant.schema}".tasks_history').fetchone()[
            0
        ]
    return int(tasks), int(history)


def table_shape(tenant: Tenant) -> str:
    """What the tasks table and its history look like, read from the catalog (not assumed)."""
    with owner_conn() as conn:
        partial, keys = conn.execute(
            "SELECT count(*) FILTER (WHERE NOT indisunique AND indpred IS NOT NULL),"
            " count(*) FILTER (WHERE indisunique) FROM pg_index WHERE indrelid = %s::regclass",
            (f'"{tenant.schema}".tasks',),
        ).fetchone()
        history = [
            ("primary key " if primary else "index ") + definition.split(" USING btree ")[1]
            for primary, definition in conn.execute(
                "SELECT i.indisprimary, pg_get_indexdef(i.indexrelid) FROM pg_index i"
                " WHERE i.indrelid = %s::regclass ORDER BY 1 DESC",
                (f'"{tenant.schema}".tasks_history',),
            )
        ]
        functions = sorted(
            r[0]
            for r in conn.execute(
                "SELECT DISTINCT p.proname FROM pg_trigger t JOIN pg_proc p ON p.oid = t.tgfoid"
                " WHERE t.tgrelid = %s::regclass AND NOT t.tgisinternal",
                (f'"{tenant.schema}".tasks',),
            )
        )
    return (
        f"tasks table: {partial} partial indexes + {keys} unique (primary key, (tenant_id, id),"
        f" (tenant_id, external_id)) + foreign key to projects; history: statement-level triggers"
        f" ({', '.join(functions)}), {' + '.join(history)}"
    )


def checkpoint() -> None:
    """Start every measurement with no dirty buffers of the one before."""
    psql("-d", BENCH_DB, "-c", "CHECKPOINT")


def time_copy(tenant: Tenant, table_csv: Path) -> float:
    set_history_triggers(tenant, False)
    checkpoint()
    started = time.perf_counter()
    psql(
        "-d",
        BENCH_DB,
        "-c",
        f"\\copy \"{tenant.schema}\".tasks ({TABLE_COLUMNS}) FROM '{table_csv}' WITH (FORMAT csv)",
    )
    elapsed = time.perf_counter() - started
    set_history_triggers(tenant, True)
    return elapsed


def upload(port: int, tenant: Tenant, path: Path) -> int:
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=900)
    with path.open("rb") as body:
        conn.request(
            "POST", "/api/v1/imports", body=body,
            headers={"Host": f"{tenant.slug}.localhost", "Authorization": f"Bearer {tenant.token}",
                     "Content-Type": "text/csv", "Content-Length": str(path.stat().st_size)},
        )  # fmt: skip
        response = conn.getresponse()
        payload = response.read()
    if response.status != 202:
        raise SystemExit(f"upload refused: {response.status} {payload[:500]!r}")
    return int(json.loads(payload)["id"])


def wait_job(job_id: int, worker: Service, peak: list[float]) -> Any:
    from control_plane.imports.models import ImportJob

    while True:
        job = ImportJob.objects.get(pk=job_id)
        child = pool_child(worker)
        if child is not None:
            peak.append(memory_mb(child, "VmHWM"))
        if job.is_finished:
            return job
        time.sleep(0.5)


@dataclass
class Imported:
    seconds: float
    job_seconds: float
    job: Any


def time_import(
    port: int, tenant: Tenant, path: Path, worker: Service, peak: list[float]
) -> Imported:
    checkpoint()
    started = time.perf_counter()
    job_id = upload(port, tenant, path)
    job = wait_job(job_id, worker, peak)
    elapsed = time.perf_counter() - started
    duration = job.duration.total_seconds() if job.duration else float("nan")
    return Imported(elapsed, duration, job)


def time_executemany(tenant: Tenant, sample: int) -> float:
    rows = table_rows(sample, tenant.tenant_id, tenant.project_id)
    set_history_triggers(tenant, False)
    checkpoint()
    with owner_conn(tenant.tenant_id) as conn:
        conn.autocommit = False
        started = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany(
                f'INSERT INTO "{tenant.schema}".tasks ({TABLE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)',
                rows,
            )
        conn.commit()
        elapsed = time.perf_counter() - started
    set_history_triggers(tenant, True)
    return elapsed


def time_orm(tenant: Tenant, sample: int) -> float:
    from datetime import date

    from taskflow.models import Task
    from tenants.binding import TenantBinding, tenant_session

    set_history_triggers(tenant, False)
    checkpoint()
    started = time.perf_counter()
    with tenant_session(TenantBinding(tenant_id=tenant.tenant_id, schema=tenant.schema)) as session:
        for i in range(sample):
            ext, name, description, status, priority, due = row_values(i, "Task")
            session.add(
                Task(tenant_id=tenant.tenant_id, project_id=tenant.project_id, external_id=ext,
                     title=name, description=description, status=status, priority=priority,
                     due_date=date.fromisoformat(due))
            )  # fmt: skip
        session.flush()
    elapsed = time.perf_counter() - started
    set_history_triggers(tenant, True)
    return elapsed


# --- Report ---------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--rss-rows", type=int, default=10_000_000)
    parser.add_argument("--rss-full", action="store_true", help="import the RSS file for real")
    parser.add_argument("--executemany-sample", type=int, default=100_000)
    parser.add_argument("--orm-sample", type=int, default=10_000)
    parser.add_argument(
        "--keep", action="store_true", help="keep the database and the generated files afterwards"
    )
    args = parser.parse_args()

    os.chdir(ROOT)
    work = Path(tempfile.mkdtemp(prefix="bench-imports-"))
    env = bench_env(work / "uploads")
    services: list[Service] = []
    try:
        print(f"creating database {BENCH_DB} ...", file=sys.stderr)
        create_bench_database(env)
        os.environ.update(env)
        import django

        django.setup()
        from control_plane.celery import app

        app.control.purge()
        web, port = start_web(env)
        services.append(web)
        worker = start_worker(env)
        services.append(worker)

        print(f"generating {args.rows:,} rows ...", file=sys.stderr)
        import_csv, update_csv = work / "tasks.csv", work / "tasks_update.csv"
        write_import_csv(import_csv, args.rows)
        write_import_csv(update_csv, args.rows, title="Renamed task")
        copy_tenant, import_tenant = new_tenant(), new_tenant()
        table_csv = work / "tasks_table.csv"
        write_table_csv(table_csv, args.rows, copy_tenant.tenant_id, copy_tenant.project_id)

        load_before = os.getloadavg()[0]
        print("psql \\copy (reference) ...", file=sys.stderr)
        copy_first = time_copy(copy_tenant, table_csv)
        print("import through the API and the worker: new rows ...", file=sys.stderr)
        baseline_rss = memory_mb(pool_child(worker) or 0, "VmRSS")
        peak: list[float] = []
        new = time_import(port, import_tenant, import_csv, worker, peak)
        print("import: every row an update ...", file=sys.stderr)
        update = time_import(port, import_tenant, update_csv, worker, peak)
        tasks, history = count_tasks(import_tenant)
        shape = table_shape(import_tenant)
        print("import, new rows, history triggers off (diagnostic) ...", file=sys.stderr)
        quiet = new_tenant()
        set_history_triggers(quiet, False)
        no_history = time_import(port, quiet, import_csv, worker, peak)
        print("psql \\copy again (reference) ...", file=sys.stderr)
        second = new_tenant()
        write_table_csv(table_csv, args.rows, second.tenant_id, second.project_id)
        copy_second = time_copy(second, table_csv)
        print("psycopg executemany and SQLAlchemy ORM samples ...", file=sys.stderr)
        many = time_executemany(new_tenant(), args.executemany_sample)
        orm = time_orm(new_tenant(), args.orm_sample)

        print(f"worker peak RSS: {args.rss_rows:,}-row file on a fresh worker ...", file=sys.stderr)
        worker.stop()
        services.remove(worker)
        rss_worker = start_worker(env)
        services.append(rss_worker)
        rss_csv = work / "tasks_rss.csv"
        write_import_csv(rss_csv, args.rss_rows, bad_last=not args.rss_full)
        rss_baseline = memory_mb(pool_child(rss_worker) or 0, "VmRSS")
        rss_peak: list[float] = []
        rss = time_import(port, new_tenant(), rss_csv, rss_worker, rss_peak)
        load_after = os.getloadavg()[0]
        from django.db import connection

        server = connection.cursor().connection.info.server_version
    finally:
        for service in services:
            service.stop()
        if not args.keep:
            drop_database(BENCH_DB)

    copy_s = (copy_first + copy_second) / 2
    rows = args.rows
    width = 64

    def line(label: str, seconds: float, count: int, target: float | None = None) -> str:
        ratio = copy_s / seconds * count / rows
        mark = "" if target is None else f">= {target:.2f}x   {verdict(ratio >= target)}"
        return f"{label:<{width}} {count:>11,} {seconds:>9.1f} {count / seconds:>10,.0f} {ratio:>7.2f}x  {mark}"

    size_mb = import_csv.stat().st_size / 1e6
    out = [
        f"Bulk import benchmark: PostgreSQL {server // 10000}.{server % 100}, Python "
        f"{stdlib_platform.python_version()}, {os.cpu_count()} CPUs; 1-min load average "
        f"{load_before:.2f} before, {load_after:.2f} after (other work on the machine shows up here)",
        f"file: {rows:,} rows, {size_mb:.1f} MB; {shape}",
        "",
        f"{'path':<{width}} {'rows':>11} {'seconds':>9} {'rows/s':>10} {'vs copy':>8}  target",
        "-" * (width + 60),
        line("psql \\copy into tasks, history triggers off (1st run)", copy_first, rows),
        line("psql \\copy into tasks, history triggers off (2nd run)", copy_second, rows),
        line("  reference = mean of the two", copy_s, rows),
        line("import via API + worker, new rows, history on", new.seconds, rows, TARGET_NEW),
        line("  of which the worker's job (started -> committed)", new.job_seconds, rows),
        line(
            "import via API + worker, new rows, history triggers off (diagnostic)",
            no_history.seconds,
            rows,
        ),
        line("  of which the worker's job (started -> committed)", no_history.job_seconds, rows),
        line(
            "import via API + worker, every row updated, history on",
            update.seconds,
            rows,
            TARGET_UPDATE,
        ),
        line("  of which the worker's job (started -> committed)", update.job_seconds, rows),
        line(
            f"psycopg executemany, history off (sample {args.executemany_sample:,}, extrapolated)",
            many * rows / args.executemany_sample,
            rows,
        ),
        line(
            f"SQLAlchemy ORM add + flush, history off (sample {args.orm_sample:,}, extrapolated)",
            orm * rows / args.orm_sample,
            rows,
        ),
        "-" * (width + 60),
        f"import results: new rows job {new.job.status} (inserted {new.job.inserted:,}); update job"
        f" {update.job.status} (updated {update.job.updated:,}); tasks {tasks:,}, history rows {history:,}",
        "",
        "worker memory (prefork pool child, VmHWM = peak resident set):",
        f"  idle child before the imports: {baseline_rss:.0f} MB RSS; peak during the {rows:,}-row"
        f" imports: {max(peak, default=0):.0f} MB",
        f"  {args.rss_rows:,}-row file ({rss_csv.stat().st_size / 1e6:.0f} MB) on a fresh worker"
        f" (idle child {rss_baseline:.0f} MB): peak {max(rss_peak, default=0):.0f} MB"
        f"   target <= {TARGET_RSS_MB:.0f} MB  {verdict(max(rss_peak, default=1e9) <= TARGET_RSS_MB)}",
        f"  that run: job {rss.job.status} after {rss.job_seconds:.0f} s, {rss.job.rows_read:,} rows read"
        + (
            ""
            if args.rss_full
            else " (read, staged and validated in full, rejected by its last row)"
        ),
    ]
    print("\n".join(out))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)  # the generated files: gigabytes at 10M rows


if __name__ == "__main__":
    main()

"""Bulk import benchmark: a realistic CSV through the API and a real worker against `psql \\copy`.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with superuser `postgres`, Redis at
REDIS_URL; roles from platform/postgres/init.sql):

    .venv/bin/python -m tests.benchmarks.bench_imports [--rows 1000000] [--runs 2]
        [--rss-rows 10000000] [--executemany-sample 0] [--orm-sample 0] [--baseline-tree DIR]
        [--keep]

What it does, in one run:

1. Creates a throw-away database (`taskflow_bench_imports_h20b` by default, BENCH_IMPORTS_DB)
   with platform/postgres/init.sql and `manage.py setup_platform` (subprocess), then starts
   gunicorn (1 process) and one Celery worker (prefork, 1 child, queue imports) on it, with its
   own Redis database (BENCH_REDIS_URL).
2. Generates a realistic file of --rows rows: rows as wide as real tasks (titles of 30-90
   characters, descriptions of 80-900 with commas, quotes and some line breaks), five projects,
   assignees by email (some in another case, 40% empty), 30% without a due date; 0.1% invalid
   rows (unknown project, bad status, impossible date, priority out of range) and 0.1% of
   external ids repeated on the next line (both lines rejected). Imported in skip_invalid mode.
   The reference gets, in the tasks table's own columns, exactly the rows the import writes.
3. Per run (--runs, at least 2), on fresh schema-mode tenants, one path after the other:
   - reference: `psql \\copy` into tasks with the history triggers disabled (the due_at sync
     trigger stays on, as it does for the import);
   - import, new rows: POST /api/v1/imports (the file streamed over HTTP), until the worker has
     committed (history written by the statement-level triggers);
   - import, every row an update: the same external ids with new titles and statuses, into the
     tenant of the run's new-rows import.
   Every tenant's tasks and tasks_history tables have autovacuum off (autovacuum_enabled =
   false, toast too), and the database is VACUUMed and CHECKPOINTed before each measurement,
   so no path runs beside another's cleanup.
4. Worker peak RSS (VmHWM of the pool child) during the --rows imports, and on a fresh worker
   for a --rss-rows file of the same shape that is imported for real (written, history
   included); --rss-rows 0 skips it.
5. Prints one table with rows/s, ratios to the mean `\\copy` and the targets, then drops the
   database. With --baseline-tree (another checkout, e.g. `git worktree add /tmp/base main`),
   every run also imports the same two files with a worker started from that tree (one worker at
   a time, the order of the trees swapped from run to run) and a second table sets the trees side
   by side: wall and job time, the worker's CPU (the pool child's user + system), the CPU of the
   database's client backends (PostgreSQL's share: COPY's parsing moves there) and the worker's
   peak RSS, with branch / baseline ratios.

The uploads' size limit is raised to what the --rss-rows file needs (IMPORT_MAX_UPLOAD_BYTES,
8 GiB unless set; the platform's default of 2 GiB refuses a 10,000,000-row file). --executemany-sample / --orm-sample add psycopg executemany and SQLAlchemy ORM
   samples (history off, extrapolated) when non-zero.

Targets: new rows >= 0.65x and an all-update re-import >= 0.50x of `\\copy`, history included
(the mean of the runs of each path); worker peak RSS <= 200 MB for a 10,000,000-row file. Not
collected by pytest.
"""

from __future__ import annotations

import argparse
import csv
import http.client
import os
import platform as stdlib_platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.bench_onboarding import (
    DB_HOST,
    DB_PORT,
    PGSUPERUSER,
    create_database,
    drop_database,
    psql,
    urls,
)
from tests.processes import GunicornServer, LoggedProcess, start_celery_worker

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
BIN = Path(PY).parent

# Its own Redis database: the bench purges the queues at start (9 is the other benchmarks').
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/8")
BENCH_DB = os.environ.get("BENCH_IMPORTS_DB", "taskflow_bench_imports_h20b")

TARGET_NEW = 0.65
TARGET_UPDATE = 0.50
TARGET_RSS_MB = 200.0
STATUSES = ("todo", "in_progress", "done", "cancelled")
PROJECTS = ("WEB", "API", "OPS", "DATA", "MOBILE")
TABLE_COLUMNS = (
    "tenant_id, project_id, external_id, title, description, status, priority, assignee_id,"
    " due_date"
)
IMPORT_HEADER = (
    "external_id", "project", "title", "description", "status", "priority", "assignee", "due_date"
)  # fmt: skip
HISTORY_TRIGGERS = ("tasks_history_insert", "tasks_history_update", "tasks_history_delete")
WORDS = (
    "customer", "invoice", "deploy", "review", "migrate", "billing", "dashboard", "report",
    "latency", "cache", "onboarding", "export", "search", "mobile", "release", "incident",
    "follow-up", "quarterly", "budget", "contract", "design", "tests", "schema", "backlog",
    "sprint", "roadmap", "feedback", "support", "integration", "webhook", "permissions", "audit",
)  # fmt: skip
ASSIGNEES = tuple(f"Member{k}@Bench.example" for k in range(20))
INVALID_EVERY = 1000  # 0.1% invalid rows
INVALID_AT = 500
REPEAT_AT = 700  # and 0.1% of rows repeat the previous row's external id
# The uploads' limit for this bench: a 10,000,000-row file is ~5.6 GB (the default 2 GiB refuses it).
MAX_UPLOAD_BYTES = 8 * 1024**3


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
        IMPORT_MAX_UPLOAD_BYTES=os.environ.get("IMPORT_MAX_UPLOAD_BYTES", str(MAX_UPLOAD_BYTES)),
    )
    return env


def create_bench_database(env: dict[str, str]) -> None:
    create_database(BENCH_DB)
    subprocess.run(
        [PY, "manage.py", "setup_platform"], cwd=ROOT, env=env, check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def start_web(env: dict[str, str]) -> tuple[LoggedProcess, int]:
    web = GunicornServer(
        env, workers=1, threads=1, worker_class="sync", extra=("--timeout", "900"),
        prefix="bench-imports-",
    )  # fmt: skip
    return web, web.port


def start_worker(env: dict[str, str], tree: Path = ROOT) -> LoggedProcess:
    """One worker (prefork, one child) on the imports queue, running the code of `tree`."""
    return start_celery_worker(
        env, queues="imports", concurrency=1, name="bench-imports", until_pool_is_up=True,
        cwd=tree,
    )  # fmt: skip


def pool_child(worker: LoggedProcess) -> int | None:
    pid = worker.proc.pid
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class BackendCpu:
    """CPU of the bench database's client backends (the worker's and the web's), sampled while
    a job runs: the last figure seen of each backend counts, so one that ends is not lost."""

    def __init__(self, exclude: set[int]) -> None:
        self.exclude = exclude
        self.start: dict[int, float] = {}
        self.last: dict[int, float] = {}

    def pids(self) -> list[int]:
        import psycopg

        # As the superuser: other roles' backend_type is hidden from the owner.
        with psycopg.connect(
            host=DB_HOST, port=DB_PORT, user=PGSUPERUSER, dbname="postgres", autocommit=True
        ) as conn:
            rows = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE datname = %s"
                " AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                (BENCH_DB,),
            ).fetchall()
        return [int(r[0]) for r in rows if int(r[0]) not in self.exclude]

    def begin(self) -> None:
        self.start = {pid: cpu_seconds(pid) for pid in self.pids()}
        self.last = dict(self.start)

    def sample(self) -> None:
        for pid in self.pids():
            seconds = cpu_seconds(pid)
            if seconds:
                self.last[pid] = seconds

    def used(self) -> float:
        return sum(seconds - self.start.get(pid, 0.0) for pid, seconds in self.last.items())


def memory_mb(pid: int, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


# --- Data -----------------------------------------------------------------------------------------


def words(i: int, count: int) -> str:
    return " ".join(WORDS[(i * 7 + k * 13 + k * k) % len(WORDS)] for k in range(count))


def _description(i: int) -> str:
    text = ", ".join(words(i + k, 4 + (i + k) % 9) for k in range(1 + i % 12))
    if i % 10 == 3:
        text = f'{text}. "Steps": {words(i, 5)}'
    if i % 100 == 7:
        text = f"{text}\nSecond paragraph: {words(i * 3, 12)}"
    return text


# Pools of texts, indexed by row (prime sizes, so rows combine them differently): generating
# millions of rows stays fast.
TITLES = tuple(words(i, 3 + i % 10) for i in range(1009))
DESCRIPTIONS = tuple(_description(i) for i in range(1013))


FAULTS = ((1, "NOPE"), (4, "urgent"), (7, "2031-02-30"), (5, "9"))  # (field, value)


def generated_row(i: int, emails: tuple[str, ...], version: str) -> tuple[list[str], bool]:
    """Row i of the file in its columns, and whether the import writes it (`version` changes
    titles and statuses: the update file)."""
    assignee = "" if i % 5 < 2 else emails[i % len(emails)]
    if assignee and i % 7 == 0:
        assignee = assignee.upper()
    row = [
        f"EXT-{i:08d}", PROJECTS[i % 5], f"{version} {TITLES[i % 1009]} #{i}",
        DESCRIPTIONS[i % 1013], STATUSES[(i + len(version)) % 4], str(i % 5), assignee,
        "" if i % 10 < 3 else f"20{30 + i % 5}-{1 + i % 12:02d}-{1 + i % 28:02d}",
    ]  # fmt: skip
    position = i % INVALID_EVERY
    if position == INVALID_AT:
        field, value = FAULTS[(i // INVALID_EVERY) % 4]
        row[field] = value
        return row, False
    if position == REPEAT_AT:  # both lines of a repeat are rejected
        row[0] = f"EXT-{i - 1:08d}"
        return row, False
    return row, position != REPEAT_AT - 1


def valid_rows(rows: int) -> int:
    """How many of a generated file's first `rows` rows the import writes (as generated_row)."""
    rejected = {INVALID_AT, REPEAT_AT - 1, REPEAT_AT}
    whole, rest = divmod(rows, INVALID_EVERY)
    return rows - whole * len(rejected) - sum(1 for position in rejected if position < rest)


def write_import_csv(
    path: Path, rows: int, emails: tuple[str, ...] = ASSIGNEES, version: str = "Task"
) -> None:
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(IMPORT_HEADER)
        writer.writerows(generated_row(i, emails, version)[0] for i in range(rows))


def write_table_csv(path: Path, rows: int, tenant: Tenant) -> int:
    """The rows the import writes, in the table's columns; how many."""
    written = 0
    with path.open("w", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        for i in range(rows):
            (ext, project, title, description, status, priority, email, due), valid = generated_row(
                i, tenant.emails, "Task"
            )
            if not valid:
                continue
            assignee = tenant.members[email.lower()] if email else ""
            writer.writerow(
                (tenant.tenant_id, tenant.projects[project], ext, title, description, status,
                 priority, assignee, due)
            )  # fmt: skip
            written += 1
    return written


def table_rows(count: int, tenant: Tenant) -> list[tuple[Any, ...]]:
    rows = []
    for i in range(count):
        (ext, project, title, description, status, priority, email, due), valid = generated_row(
            i, tenant.emails, "Task"
        )
        if valid:
            assignee = tenant.members[email.lower()] if email else None
            rows.append(
                (tenant.tenant_id, tenant.projects[project], ext, title, description, status,
                 int(priority), assignee, due or None)
            )  # fmt: skip
    return rows


# --- Measurements ---------------------------------------------------------------------------------


@dataclass
class Tenant:
    slug: str
    tenant_id: int
    schema: str
    projects: dict[str, int]  # key -> id
    members: dict[str, int]  # lower-cased email -> user id
    token: str

    @property
    def emails(self) -> tuple[str, ...]:
        return ASSIGNEES


def new_tenant() -> Tenant:
    """A schema-mode tenant with the file's projects, autovacuum off on its tasks and history."""
    from django.contrib.auth.models import User

    from control_plane.identity.models import Membership
    from control_plane.imports.services import members_of
    from taskflow.models import Project
    from tenants.binding import binding_for, tenant_session
    from tenants.database_roles import owner_connection
    from tests.taskflow.conftest import provisioned_tenant

    fixture = provisioned_tenant()
    binding = binding_for(fixture.tenant)
    with tenant_session(binding) as session:
        projects = [
            Project(tenant_id=fixture.tenant.pk, key=key, name=f"Bench {key}", description="")
            for key in PROJECTS
        ]
        session.add_all(projects)
        session.flush()
        ids = {p.key: p.id for p in projects}
    with owner_connection() as conn:  # the database of this process's settings
        for table in ("tasks", "tasks_history"):
            conn.execute(
                f'ALTER TABLE "{binding.schema}".{table} SET (autovacuum_enabled = false,'
                " toast.autovacuum_enabled = false)"
            )
    for email in ASSIGNEES:  # the same people in every tenant: one file fits them all
        user = User.objects.get_or_create(username=email, defaults={"email": email})[0]
        Membership.objects.create(user=user, tenant=fixture.tenant, role="member")
    members = {email.lower(): user_id for email, user_id in members_of(fixture.tenant.pk)}
    return Tenant(
        fixture.tenant.slug, fixture.tenant.pk, binding.schema, ids, members,
        fixture.tokens["member"],
    )  # fmt: skip


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
    """The history triggers only: the due_at sync trigger stays on for every path."""
    with owner_conn() as conn:
        action = "ENABLE" if enabled else "DISABLE"
        for trigger in HISTORY_TRIGGERS:
            conn.execute(f'ALTER TABLE "{tenant.schema}".tasks {action} TRIGGER {trigger}')


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
    """Start every measurement with no dead rows left to clean (autovacuum is off on the tables
    measured) and no dirty buffers of the one before."""
    psql("-d", BENCH_DB, "-c", "VACUUM (ANALYZE)")
    psql("-d", BENCH_DB, "-c", "CHECKPOINT")


def time_copy(tenant: Tenant, table_csv: Path) -> float:
    set_history_triggers(tenant, False)
    checkpoint()
    started = time.perf_counter()
    psql(
        "-d",
        BENCH_DB,
        "-c",  # the tenant's id sequence (the ids' default) is named from it
        f"SELECT set_config('app.tenant_id', '{tenant.tenant_id}', false)",
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
            "POST", "/api/v1/imports?mode=skip_invalid", body=body,
            headers={"Host": f"{tenant.slug}.localhost", "Authorization": f"Bearer {tenant.token}",
                     "Content-Type": "text/csv", "Content-Length": str(path.stat().st_size)},
        )  # fmt: skip
        response = conn.getresponse()
        payload = response.read()
    if response.status != 202:
        raise SystemExit(f"upload refused: {response.status} {payload[:500]!r}")
    return int(json.loads(payload)["id"])


def wait_job(
    tenant: Tenant, number: int, worker: LoggedProcess, peak: list[float], backends: BackendCpu
) -> Any:
    """The job the tenant's API numbers `number` (numbers are per tenant), once it ended."""
    from control_plane.imports.models import ImportJob

    while True:
        job = ImportJob.objects.get(tenant_id=tenant.tenant_id, number=number)
        child = pool_child(worker)
        if child is not None:
            peak.append(memory_mb(child, "VmHWM"))
        backends.sample()
        if job.is_finished:
            return job
        time.sleep(0.5)


@dataclass
class Imported:
    seconds: float
    job_seconds: float
    job: Any
    worker_cpu: float = float("nan")  # the pool child's user + system seconds
    backend_cpu: float = float("nan")  # the database's client backends' seconds


def time_import(
    port: int, tenant: Tenant, path: Path, worker: LoggedProcess, peak: list[float]
) -> Imported:
    from django.db import connection

    checkpoint()
    connection.ensure_connection()
    own = connection.connection.info.backend_pid  # the bench's own polling
    backends = BackendCpu(exclude={own})
    backends.begin()
    child = pool_child(worker) or 0
    cpu_before = cpu_seconds(child)
    started = time.perf_counter()
    job_id = upload(port, tenant, path)
    job = wait_job(tenant, job_id, worker, peak, backends)
    elapsed = time.perf_counter() - started
    worker_cpu = cpu_seconds(child) - cpu_before
    duration = job.duration.total_seconds() if job.duration else float("nan")
    return Imported(elapsed, duration, job, worker_cpu, backends.used())


def time_executemany(tenant: Tenant, sample: int) -> float:
    rows = table_rows(sample, tenant)
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

    rows = table_rows(sample, tenant)
    set_history_triggers(tenant, False)
    checkpoint()
    started = time.perf_counter()
    with tenant_session(TenantBinding(tenant_id=tenant.tenant_id, schema=tenant.schema)) as session:
        for tenant_id, project_id, ext, name, description, status, priority, assignee, due in rows:
            session.add(
                Task(tenant_id=tenant_id, project_id=project_id, external_id=ext, title=name,
                     description=description, status=status, priority=priority,
                     assignee_id=assignee, due_date=date.fromisoformat(due) if due else None)
            )  # fmt: skip
        session.flush()
    elapsed = time.perf_counter() - started
    set_history_triggers(tenant, True)
    return elapsed


# --- Report ---------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


@dataclass
class Run:
    copy: float
    new: Imported
    update: Imported


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (5-min {five:.2f})"


def main_table(
    args: argparse.Namespace,
    runs: list[Run],
    written: int,
    server: int,
    loads: list[str],
    shape: str,
    counts: tuple[int, int],
    samples: tuple[float, float],
    memory: tuple[float, list[float]],
) -> list[str]:
    """The table of the --rows runs (printed before the RSS run, which takes far longer)."""
    tasks, history = counts
    many, orm = samples
    baseline_rss, peak = memory
    rows = args.rows
    copy_rate = statistics.mean(written / r.copy for r in runs)
    width = 66

    def line(label: str, seconds: float, count: int, target: float | None = None) -> str:
        ratio = count / seconds / copy_rate
        mark = "" if target is None else f">= {target:.2f}x   {verdict(ratio >= target)}"
        return (
            f"{label:<{width}} {count:>11,} {seconds:>9.1f} {count / seconds:>10,.0f}"
            f" {ratio:>7.2f}x  {mark}"
        )

    def mean_line(label: str, seconds: list[float], target: float | None = None) -> str:
        rate = statistics.mean(rows / s for s in seconds)
        return line(label, rows / rate, rows, target)

    size_mb = runs[0].new.job.file_size / 1e6
    out = [
        f"Bulk import benchmark: PostgreSQL {server // 10000}.{server % 100}, Python "
        f"{stdlib_platform.python_version()}, {os.cpu_count()} CPUs; 1-min load average at the"
        f" start and after each run: {', '.join(loads)}",
        f"file: {rows:,} rows, {size_mb:.1f} MB ({size_mb * 1e6 / rows:.0f} bytes a row), 5"
        f" projects, 0.1% invalid rows and 0.1% repeated external ids (skip_invalid: {written:,}"
        f" rows written); autovacuum off on tasks and tasks_history, VACUUM + CHECKPOINT before"
        f" each measurement",
        shape,
        "",
        f"{'path':<{width}} {'rows':>11} {'seconds':>9} {'rows/s':>10} {'vs copy':>8}  target",
        "-" * (width + 62),
    ]
    for number, run in enumerate(runs, 1):
        out.append(
            line(f"psql \\copy into tasks, history triggers off (run {number})", run.copy, written)
        )
    out.append(line("  reference = mean rate of the runs", written / copy_rate, written))
    for number, run in enumerate(runs, 1):
        out.append(
            line(
                f"import via API + worker, new rows, history on (run {number})",
                run.new.seconds,
                rows,
            )
        )
        out.append(
            line("  of which the worker's job (started -> committed)", run.new.job_seconds, rows)
        )
    out.append(
        mean_line("  new rows: mean rate of the runs", [r.new.seconds for r in runs], TARGET_NEW)
    )
    for number, run in enumerate(runs, 1):
        out.append(
            line(
                f"import via API + worker, every row updated, history on (run {number})",
                run.update.seconds,
                rows,
            )
        )
        out.append(
            line("  of which the worker's job (started -> committed)", run.update.job_seconds, rows)
        )
    out.append(
        mean_line(
            "  every row updated: mean rate of the runs",
            [r.update.seconds for r in runs],
            TARGET_UPDATE,
        )
    )
    if many:
        out.append(
            line(
                f"psycopg executemany, history off (sample {args.executemany_sample:,}, extrapolated)",
                many * rows / args.executemany_sample,
                rows,
            )
        )
    if orm:
        out.append(
            line(
                f"SQLAlchemy ORM add + flush, history off (sample {args.orm_sample:,}, extrapolated)",
                orm * rows / args.orm_sample,
                rows,
            )
        )
    last = runs[-1]
    out += [
        "-" * (width + 62),
        f"import results (last run): new rows job {last.new.job.status} (inserted"
        f" {last.new.job.inserted:,}, rejected {last.new.job.rejected:,}); update job"
        f" {last.update.job.status} (updated {last.update.job.updated:,}, rejected"
        f" {last.update.job.rejected:,}); tasks {tasks:,}, history rows {history:,}",
        "",
        "worker memory (prefork pool child, VmHWM = peak resident set):",
        f"  idle child before the imports: {baseline_rss:.0f} MB RSS; peak during the {rows:,}-row"
        f" imports: {max(peak, default=0):.0f} MB",
    ]
    return out


BRANCH, BASELINE = "branch", "baseline"

# Staging alone, in a process of the tree's code: the file into the staging table as that tree's
# pipeline stages it (COPY of its bytes where the tree has it, else the strict reader's records),
# timed by the process's own CPU, its PostgreSQL backend's and the wall clock, then rolled back.
STAGING_ONLY = """
import json, os, sys, time
import django
django.setup()
from taskflow.imports import staging
from taskflow.imports.reading import CsvRecords
from tenants.database_roles import owner_connection
path, = sys.argv[1:]
def backend_cpu(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
with owner_connection() as pg, open(path, "rb") as file:
    staging.create_tables(pg)
    backend = pg.info.backend_pid
    cpu, wall, pg_cpu = time.process_time(), time.perf_counter(), backend_cpu(backend)
    records = CsvRecords(file)
    columns = records.read_header()
    staged = None
    if hasattr(staging, "copy_file"):
        staged = staging.copy_file(pg, columns, file, header_lines=records.lines.number,
                                   tick=lambda *_: None, every=10**9, batch_rows=50_000)
    if staged is None:
        file.seek(0)
        records = CsvRecords(file)
        records.read_header()
        staged = staging.copy_records(pg, columns, records, tick=lambda *_: None, every=10**9,
                                      batch_rows=50_000)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    pg_cpu = backend_cpu(backend) - pg_cpu
    pg.rollback()
print(json.dumps({"cpu": cpu, "wall": wall, "pg_cpu": pg_cpu, "rows": staged.rows}))
"""


def staging_only(tree: Path, env: dict[str, str], path: Path) -> dict[str, float]:
    """CPU and wall seconds of staging `path` with the code of `tree` (a process of its own)."""
    import json

    done = subprocess.run(
        [PY, "-c", STAGING_ONLY, str(path)], cwd=tree, env={**env, "PYTHONPATH": str(tree)},
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def staging_table(
    trees: dict[str, Path], env: dict[str, str], path: Path, rows: int, rounds: int = 2
) -> list[str]:
    """Staging alone, the trees taking turns: the worker-side CPU that COPY of the bytes saves."""
    seen: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
    for number in range(rounds):
        for name in list(trees) if number % 2 == 0 else list(reversed(trees)):
            seen[name].append(staging_only(trees[name], env, path))
    out = [
        "",
        f"staging alone ({rows:,}-row file; {rounds} rounds, the trees taking turns; {load()}):",
    ]
    for name, samples in seen.items():
        cpus = ", ".join(f"{x['cpu']:.2f}" for x in samples)
        walls = ", ".join(f"{x['wall']:.2f}" for x in samples)
        backends = ", ".join(f"{x['pg_cpu']:.2f}" for x in samples)
        out.append(
            f"  {name:<9} worker CPU {cpus} s; its PostgreSQL backend's CPU {backends} s;"
            f" wall {walls} s"
        )
    if BASELINE in seen:
        cpu = statistics.mean(x["cpu"] for x in seen[BRANCH]) / statistics.mean(
            x["cpu"] for x in seen[BASELINE]
        )
        both = statistics.mean(x["cpu"] + x["pg_cpu"] for x in seen[BRANCH]) / statistics.mean(
            x["cpu"] + x["pg_cpu"] for x in seen[BASELINE]
        )
        out.append(
            f"  staging CPU, branch / baseline: worker {cpu:.2f}x, worker + backend {both:.2f}x"
        )
    return out


def side_table(
    args: argparse.Namespace,
    side: dict[str, list[Run]],
    peaks: dict[str, list[float]],
    trees: dict[str, Path],
    written: int,
) -> list[str]:
    """This tree beside the baseline tree: the same files in the same runs, each tree's worker."""
    width = 40
    out = [
        "",
        f"side by side, {args.rows:,} rows: this tree ({trees[BRANCH]}) vs the baseline tree"
        f" ({trees[BASELINE]}), one worker at a time, the trees' order swapped each run",
        f"{'path':<{width}} {'tree':<9} {'wall s':>8} {'job s':>8} {'worker CPU s':>13}"
        f" {'PG backends CPU s':>18} {'vs copy':>8}",
        "-" * (width + 70),
    ]
    for kind in ("new", "update"):
        label = "new rows" if kind == "new" else "every row updated"
        for number in range(len(side[BRANCH])):
            for name in (BRANCH, BASELINE):
                run = side[name][number]
                done: Imported = getattr(run, kind)
                out.append(
                    f"{label + f' (run {number + 1})':<{width}} {name:<9} {done.seconds:>8.1f}"
                    f" {done.job_seconds:>8.1f} {done.worker_cpu:>13.2f} {done.backend_cpu:>18.2f}"
                    f" {args.rows / done.seconds / (written / run.copy):>7.2f}x"
                )
    out.append("-" * (width + 70))

    def ratio(branch: float, baseline: float) -> float:
        return branch / baseline if baseline else float("nan")

    def mean(name: str, kind: str, field: str) -> float:
        return statistics.mean(getattr(getattr(r, kind), field) for r in side[name])

    for kind, label in (("new", "new rows"), ("update", "every row updated")):
        ratios = ", ".join(
            f"{title} {ratio(mean(BRANCH, kind, field), mean(BASELINE, kind, field)):.2f}x"
            for title, field in (
                ("wall", "seconds"),
                ("job", "job_seconds"),
                ("worker CPU", "worker_cpu"),
                ("PG backends CPU", "backend_cpu"),
            )
        )
        out.append(f"{label}, branch / baseline (mean of the runs; < 1 is better): {ratios}")
    out.append(
        "worker peak RSS (VmHWM of the pool child over the runs): "
        + ", ".join(f"{name} {max(peaks[name], default=0):.0f} MB" for name in (BRANCH, BASELINE))
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=2, help="runs of each path (at least 2)")
    parser.add_argument("--rss-rows", type=int, default=10_000_000, help="0: skip")
    parser.add_argument("--executemany-sample", type=int, default=0)
    parser.add_argument("--orm-sample", type=int, default=0)
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="another checkout (e.g. main's): its worker imports the same files, side by side",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the database and the generated files afterwards"
    )
    args = parser.parse_args()

    os.chdir(ROOT)
    work = Path(tempfile.mkdtemp(prefix="bench-imports-"))
    env = bench_env(work / "uploads")
    services: list[LoggedProcess] = []
    runs: list[Run] = []
    loads: list[str] = []
    many = orm = rss_baseline = 0.0
    rss_peak: list[float] = []
    rss: Imported | None = None
    rss_expected = 0
    rss_counts = (0, 0)
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

        first = new_tenant()  # every tenant has the same members' emails
        print(f"generating {args.rows:,} rows ...", file=sys.stderr)
        import_csv, update_csv = work / "tasks.csv", work / "tasks_update.csv"
        write_import_csv(import_csv, args.rows, first.emails)
        write_import_csv(update_csv, args.rows, first.emails, version="Renamed")
        table_csv = work / "tasks_table.csv"

        baseline_rss = memory_mb(pool_child(worker) or 0, "VmRSS")
        trees = {BRANCH: ROOT}
        if args.baseline_tree:
            trees[BASELINE] = args.baseline_tree.resolve()
        side: dict[str, list[Run]] = {name: [] for name in trees}
        peaks: dict[str, list[float]] = {name: [] for name in trees}
        running = BRANCH
        written = 0
        loads.append(load())
        for number in range(1, max(args.runs, 2) + 1):
            copy_tenant = first if number == 1 else new_tenant()
            written = write_table_csv(table_csv, args.rows, copy_tenant)
            print(f"run {number}: psql \\copy (reference) ...", file=sys.stderr)
            copy_s = time_copy(copy_tenant, table_csv)
            order = list(trees) if number % 2 else list(reversed(trees))
            for name in order:  # the trees take turns going first
                if name != running:
                    worker.stop()
                    services.remove(worker)
                    worker = start_worker(env, trees[name])
                    services.append(worker)
                    running = name
                import_tenant = new_tenant()
                print(f"run {number}: {name}: import, new rows ...", file=sys.stderr)
                new = time_import(port, import_tenant, import_csv, worker, peaks[name])
                print(f"run {number}: {name}: import, every row an update ...", file=sys.stderr)
                update = time_import(port, import_tenant, update_csv, worker, peaks[name])
                side[name].append(Run(copy_s, new, update))
                if name == BRANCH:
                    tasks_tenant = import_tenant
            runs = side[BRANCH]
            loads.append(load())
        import_tenant = tasks_tenant
        peak = peaks[BRANCH]
        tasks, history = count_tasks(import_tenant)
        shape = table_shape(import_tenant)
        if args.executemany_sample:
            many = time_executemany(new_tenant(), args.executemany_sample)
        if args.orm_sample:
            orm = time_orm(new_tenant(), args.orm_sample)

        from django.db import connection

        server = connection.cursor().connection.info.server_version
        print(
            "\n".join(
                main_table(
                    args, runs, written, server, loads, shape, (tasks, history), (many, orm),
                    (baseline_rss, peak),
                )
            ),
            flush=True,
        )  # fmt: skip
        if args.baseline_tree:
            print("\n".join(side_table(args, side, peaks, trees, written)), flush=True)
            print("\n".join(staging_table(trees, env, import_csv, args.rows)), flush=True)
        if args.rss_rows:
            print(
                f"worker peak RSS: {args.rss_rows:,}-row file on a fresh worker ...",
                file=sys.stderr,
            )
            worker.stop()
            services.remove(worker)
            rss_worker = start_worker(env)  # this tree's
            services.append(rss_worker)
            import_csv.unlink()
            update_csv.unlink()
            table_csv.unlink(missing_ok=True)
            rss_csv = work / "tasks_rss.csv"
            write_import_csv(rss_csv, args.rss_rows, first.emails)
            rss_size = rss_csv.stat().st_size
            rss_baseline = memory_mb(pool_child(rss_worker) or 0, "VmRSS")
            rss_tenant = new_tenant()
            rss = time_import(port, rss_tenant, rss_csv, rss_worker, rss_peak)
            loads.append(load())
            rss_expected = valid_rows(args.rss_rows)
            rss_counts = count_tasks(rss_tenant)
    finally:
        for service in services:
            service.stop()
        if not args.keep:
            drop_database(BENCH_DB)

    out = []
    if rss is not None:
        # Written, not rejected: the tenant's table holds every valid row of the file, each
        # with its history row.
        written_all = rss_counts == (rss_expected, rss_expected)
        ok = (
            max(rss_peak, default=1e9) <= TARGET_RSS_MB
            and rss.job.status == "succeeded"
            and written_all
        )
        out += [
            f"  {args.rss_rows:,}-row file ({rss_size / 1e6:,.0f} MB) on a fresh worker (idle child"
            f" {rss_baseline:.0f} MB): peak {max(rss_peak, default=0):.0f} MB   target <="
            f" {TARGET_RSS_MB:.0f} MB, written  {verdict(ok)}",
            f"  that run: job {rss.job.status} after {rss.job_seconds:.0f} s ({rss.seconds:.0f} s"
            f" with the upload), {rss.job.rows_read:,} rows read, {rss.job.inserted:,} inserted,"
            f" {rss.job.rejected:,} rejected; 1-min load average after it: {loads[-1]}",
            f"  the tenant's table after it: {rss_counts[0]:,} tasks and {rss_counts[1]:,} history"
            f" rows, of {rss_expected:,} valid rows in the file  {verdict(written_all)}",
        ]
        print("\n".join(out))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)  # the generated files: gigabytes at 10M rows


if __name__ == "__main__":
    main()

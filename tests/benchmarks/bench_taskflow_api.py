"""TaskFlow API benchmark: keyset vs OFFSET at depth, and list throughput vs plain DRF + ORM.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with superuser `postgres`, Redis at
127.0.0.1:6379, `wrk` on PATH: `apt-get install wrk`); about 10 minutes:

    .venv/bin/python -m tests.benchmarks.bench_taskflow_api [--tasks 1000000] [--requests 200]
        [--budget 60] [--workers 2] [--threads 4] [--connections 32] [--duration 20]
        [--rounds 2] [--few-clients 1,4,8] [--breakdown-requests 300] [--skip-latency]
        [--baseline-tree DIR [--tree DIR]] [--keep] [--reuse]

What it does, in one run:

1. Creates the throw-away database `taskflow_bench_api` with platform/postgres/init.sql (a
   leftover of an earlier run is dropped first) and runs `manage.py setup_platform` in a
   subprocess. In-process (django.setup() on that database): one schema-mode tenant `apibench`
   (tests.factories.make_tenant + tenants.provisioning.provision_storage) and a member with an
   API token (tests.factories.make_member).
2. Loads --tasks tasks (100 projects) as the owner role in one transaction: history triggers
   off (ALTER TABLE ... DISABLE TRIGGER USER), one INSERT ... SELECT FROM generate_series,
   triggers back on, then VACUUM (ANALYZE). created_at is unique and increasing; priority
   0-4 uniform; due_date NULL for ~20 %.
3. Starts gunicorn (gthread, --workers x --threads, default 2 x 4: one process per core, threads
   to overlap the database round trips; DEBUG=false, DJANGO_ENV=development, an explicit random
   SECRET_KEY, Redis db 9) with settings tests.benchmarks.taskflow_api.settings: the platform's
   settings and URLs unchanged, plus two benchmark-only routes: /bench/offset-tasks (the rows
   of /api/v1/tasks reached by OFFSET; same view base class, session, auth and rendering) and
   /bench/drf-tasks (a plain DRF ListAPIView + CursorPagination over an unmanaged Django model
   of the tenant's `tasks`; search_path from django-tenants). Both APIs authenticate with the
   platform's bearer token class (token + user query, membership query) and the same
   permission classes.
4. Page latency (section 1): one sequential keep-alive client, requests interleaved, for
   sort=created_at and sort=-priority,due_date: page 1 (limit 100) vs page 10,000 by keyset
   cursor vs the same page by OFFSET 999900. Up to --requests per page kind; a kind that has
   spent --budget seconds stops at >= 20 samples (OFFSET, unindexed sorts). The page-10,000
   cursor is minted, not walked to: SQL finds the 999,900th row in the sort's order (the last
   row of page 9,999) and taskflow.pagination.encode_cursor signs its key values (each sort
   field's value_of) with the scope (tenant, sort text, filter fingerprint) and the SECRET_KEY
   the server uses: what the server puts in page 9,999's `next` link. The benchmark checks that
   page 10,000 has the OFFSET page's 100 ids and no next link.
5. Throughput (section 2): wrk, --connections keep-alive clients (closed loop), GET
   /api/v1/tasks?limit=50 vs GET /bench/drf-tasks?limit=50, each over the same cycle of paths:
   one first page in four, the others pages from cursors at the same 96 random depths
   (TaskFlow cursors minted as above, DRF cursors encoded as DRF does); both APIs are checked to
   return the same 50 ids for every path first. Rounds alternate TaskFlow, DRF, ... after a
   warm-up of each, then short rounds of --few-clients (default 1, 4 and 8: service time with
   little queueing), then one round of GET /healthz (the floor: gunicorn and Django answering before tenant resolution,
   authentication or any query); the server is drained between rounds. wrk runs on the same 2
   cores as gunicorn and PostgreSQL: the CPU each used is printed, with a CPU-normalised rate
   that discounts other work on the machine, and the ceiling the CPU per request sets on req/s
   and on the latency of --connections closed-loop clients.
6. EXPLAIN (ANALYZE, BUFFERS) (section 3) of the SQL the page-10,000 keyset and OFFSET requests
   run (captured from the real selector / view code in-process, run as the app role in a bound
   session); a mixed-direction sort's page reads one index range scan per run of keys
   (taskflow.pagination).
7. Where a list request's time goes (section 4): each step of the request path timed alone,
   in-process (tests.benchmarks.taskflow_api.breakdown).
With --baseline-tree DIR (another checkout: `git worktree add /tmp/base main`), section 2 is
   replaced by the two trees side by side (tests.benchmarks.taskflow_api.side_by_side): a
   gunicorn of each on the same database, --rounds interleaved wrk rounds of the default sort's
   and the mixed sort's paths per tree, and each tree's CPU per request (its workers' CPU time,
   and with its PostgreSQL backends', over the requests served) and latency percentiles with
   the ratio candidate/baseline. --tree DIR serves another checkout as the candidate: the same
   tree twice is an A/A run, whose ratios show the noise. --skip-latency: CPU only (no section 1,
   no few-client or open-loop rounds).
8. Prints the table, then drops the database (unless --keep; --reuse skips steps 1-2 on a kept
   database, with a fresh token). BENCH_DB_NAME names another database (default
   taskflow_bench_api), BENCH_REDIS_URL another Redis database, to run beside someone else's run.

Targets: page 10,000 / page 1 <= 1.2x (keyset); TaskFlow >= 1.5x DRF's requests/s; TaskFlow
p99 <= 25 ms. Not collected by pytest (`--ignore=tests/benchmarks`).
"""

from __future__ import annotations

import argparse
import http.client
import importlib.metadata
import json
import os
import platform as stdlib_platform
import random
import re
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from base64 import b64encode
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlencode

from tests.benchmarks.bench_onboarding import create_database, drop_database, urls
from tests.processes import GunicornServer, cpu_by_pid

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
GUNICORN = str(Path(PY).parent / "gunicorn")
# The platform's gthread worker (platform/gunicorn.conf.py); BENCH_WORKER_CLASS=gthread: gunicorn's.
WORKER_CLASS = os.environ.get(
    "BENCH_WORKER_CLASS", "control_plane.http.gunicorn_worker.ProblemThreadWorker"
)

# BENCH_DB_NAME: another database name, to run beside a colleague's run of this benchmark.
BENCH_DB = os.environ.get("BENCH_DB_NAME", "taskflow_bench_api")
SLUG = "apibench"
HOST = f"{SLUG}.localhost"  # sent as Host; we connect to 127.0.0.1 (no *.localhost resolver)
REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/9")
SETTINGS = "tests.benchmarks.taskflow_api.settings"
SORTS = ("created_at", "-priority,due_date")
# The sorts name `due_date`, as clients of this version do (2026-12-06 names it `due_at`); the
# benchmark's own SQL baselines read the same column.
API_VERSION = "2026-12-01"
PROJECTS = 100
DEEP_LIMIT = 100
DEEP_PAGE = 10_000
LOAD_LIMIT = 50
LOAD_DEPTHS = 96
MIN_SAMPLES = 20

TARGET_DEPTH_RATIO = 1.2
TARGET_RPS_RATIO = 1.5
TARGET_P99_MS = 25.0


# --- Environment -------------------------------------------------------------------------------


def bench_env(secret_key: str) -> dict[str, str]:
    app, owner = urls(BENCH_DB)
    env = os.environ.copy()
    env.update(
        DATABASE_URL=app,
        MIGRATION_DATABASE_URL=owner,
        DJANGO_ENV="development",
        DEBUG="false",  # no per-statement query log, no debug pages: as production serves
        SECRET_KEY=secret_key,  # the server signs cursors with it; so does the benchmark
        REDIS_URL=REDIS_URL,
        CELERY_BROKER_URL=REDIS_URL,
        CACHE_KEY_PREFIX="tfbenchapi",
        LOG_LEVEL="WARNING",
        # 32 clients of one tenant are far over its plan's read limit: 429s would be measured.
        # The limiter's own cost is bench_observability's figure.
        RATE_LIMITS_ENABLED="false",
        DJANGO_SETTINGS_MODULE=SETTINGS,
    )
    return env


def p50(values: list[float]) -> float:
    return statistics.median(values)


def pct(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def owner_connection(*, autocommit: bool = False) -> Any:
    """A new psycopg connection to the benchmark database as the owner role."""
    import psycopg

    url = urls(BENCH_DB)[1].replace("postgres://", "postgresql://", 1)
    return psycopg.connect(url, autocommit=autocommit)


# --- Tenant and data ---------------------------------------------------------------------------


@dataclass
class Bench:
    tenant_id: int
    schema: str
    token: str
    tasks: int
    load: dict[str, float] = field(default_factory=dict)


def make_bench_tenant(reuse: bool) -> tuple[Any, str]:
    from tenants.models import Tenant
    from tenants.provisioning import provision_storage
    from tenants.resolution import forget_hosts
    from tests.factories import make_member, make_tenant

    if reuse:
        tenant = Tenant.objects.get(slug=SLUG)
    else:
        tenant = make_tenant(SLUG)
        revisions = provision_storage(tenant)
        Tenant.objects.filter(pk=tenant.pk).update(revisions=revisions)
    forget_hosts(HOST)  # Redis db 9 may hold this host from an earlier run's database
    _, token = make_member(tenant, f"bench-{uuid.uuid4().hex[:8]}@example.com", role="member")
    return tenant, token


LOAD_SQL = """
INSERT INTO {s}.tasks (tenant_id, project_id, title, description, status, priority,
                       assignee_id, due_date, due_at, created_at, updated_at)
SELECT %(tenant)s,
       %(first_project)s + (g %% {projects}),
       'Task ' || g || ' ' || left(md5(g::text), 16),
       'Benchmark task number ' || g || '. ' || repeat('Lorem ipsum dolor sit amet. ', 3),
       (ARRAY['todo', 'in_progress', 'done', 'cancelled'])[1 + floor(random() * 4)::int],
       floor(random() * 5)::smallint,
       CASE WHEN random() < 0.1 THEN NULL ELSE 1 + floor(random() * 50)::bigint END,
       d.day,
       d.day::timestamp AT TIME ZONE 'UTC',
       ts,
       ts + random() * interval '30 days'
FROM generate_series(1, %(total)s) AS g,
     LATERAL (SELECT timestamptz '2024-01-01 00:00:00+00' + g * interval '30 seconds'
                     + floor(random() * 29000000)::int * interval '1 microsecond' AS ts) AS t,
     LATERAL (SELECT CASE WHEN random() < 0.2 THEN NULL
                          ELSE date '2025-01-01' + floor(random() * 730)::int END AS day) AS d
"""


SECONDARY_INDEXES = """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.schemaname = %(schema)s AND i.tablename = 'tasks' AND NOT EXISTS (
  SELECT 1 FROM pg_constraint c WHERE c.conindid = format('%%I.%%I', i.schemaname, i.indexname)::regclass)
"""
# Constraints of tasks to drop before the load and add back after, in the order they are added:
# unique keys, then foreign keys from tasks, then foreign keys to tasks (the primary key stays).
LOAD_CONSTRAINTS = """
SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
FROM pg_constraint c, (SELECT format('%%I.tasks', %(schema)s::text)::regclass AS tasks) t
WHERE (c.conrelid = t.tasks AND c.contype IN ('u', 'f')) OR (c.confrelid = t.tasks AND c.contype = 'f')
ORDER BY c.contype = 'f', c.confrelid = t.tasks, c.conname
"""


def load_tasks(schema: str, tenant_id: int, total: int) -> dict[str, float]:
    """Bulk-load `total` live tasks as the owner in one transaction, then VACUUM (ANALYZE).

    History triggers are off during the load (DISABLE TRIGGER USER), the `due_at` sync trigger
    with them, so the load writes `due_date` and `due_at` in step itself. The tasks table's secondary
    indexes, unique constraints and foreign keys (from it and to it) are dropped first and made
    again after the INSERT, from their own catalog definitions: one sort per index and one join
    per foreign key instead of a million index insertions and foreign-key checks each. The
    primary key stays.
    """
    from psycopg import sql

    timing: dict[str, float] = {}
    s = sql.Identifier(schema)
    started = time.perf_counter()
    with owner_connection() as conn:
        conn.execute("SET LOCAL maintenance_work_mem = '256MB'")
        conn.execute("SELECT setseed(0.4242)")
        # Row-level security is forced in every placement, for the owner too.
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", [str(tenant_id)])
        for table in ("projects", "tasks"):
            conn.execute(
                sql.SQL("ALTER TABLE {}.{} DISABLE TRIGGER USER").format(s, sql.Identifier(table))
            )
        indexes = conn.execute(SECONDARY_INDEXES, {"schema": schema}).fetchall()
        constraints = conn.execute(LOAD_CONSTRAINTS, {"schema": schema}).fetchall()
        for table, name, _ in reversed(constraints):
            conn.execute(
                sql.SQL("ALTER TABLE {} DROP CONSTRAINT {}").format(
                    sql.SQL(table), sql.Identifier(name)
                )
            )
        for name, _ in indexes:
            conn.execute(sql.SQL("DROP INDEX {}.{}").format(s, sql.Identifier(name)))
        rows = conn.execute(
            sql.SQL(
                "INSERT INTO {}.projects (tenant_id, key, name)"
                " SELECT %s, 'P' || g, 'Project ' || g FROM generate_series(1, %s) g RETURNING id"
            ).format(s),
            [tenant_id, PROJECTS],
        ).fetchall()
        first_project = min(r[0] for r in rows)
        t0 = time.perf_counter()
        conn.execute(
            sql.SQL(LOAD_SQL).format(s=s, projects=sql.Literal(PROJECTS)),
            {"tenant": tenant_id, "first_project": first_project, "total": total},
        )
        timing["insert"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _, definition in indexes:
            conn.execute(definition)
        for table, name, definition in constraints:
            conn.execute(
                sql.SQL("ALTER TABLE {} ADD CONSTRAINT {} {}").format(
                    sql.SQL(table), sql.Identifier(name), sql.SQL(definition)
                )
            )
        timing["indexes"] = time.perf_counter() - t0
        timing["index_count"] = len(indexes)
        timing["constraint_count"] = len(constraints)
        for table in ("projects", "tasks"):
            conn.execute(
                sql.SQL("ALTER TABLE {}.{} ENABLE TRIGGER USER").format(s, sql.Identifier(table))
            )
        conn.commit()
    t0 = time.perf_counter()
    with owner_connection(autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM (ANALYZE) {}.tasks, {}.projects").format(s, s))
        (size,) = conn.execute(
            "SELECT pg_total_relation_size(%s::regclass)", [f"{schema}.tasks"]
        ).fetchone()
    timing["vacuum_analyze"] = time.perf_counter() - t0
    timing["total"] = time.perf_counter() - started
    timing["size_mb"] = size / 1e6
    return timing


def count_tasks(schema: str, tenant_id: int) -> int:
    from psycopg import sql

    with owner_connection() as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", [str(tenant_id)])
        row = conn.execute(sql.SQL("SELECT count(*) FROM {}.tasks").format(sql.Identifier(schema)))
        return int(row.fetchone()[0])


# --- Cursors -----------------------------------------------------------------------------------


def server_sort(sort_text: str | None) -> Any:
    """`sort_text` as the server parses it for a client at API_VERSION: the version's query
    upgraded to the newest names (`due_date` -> `due_at`), then parsed with the sort keys of
    the due column this database serves (taskflow.due: `due_date` until the switch)."""
    from taskflow import due
    from taskflow.pagination import parse_sort
    from taskflow.selectors import task_sorts

    return parse_sort(api_sort_text(sort_text), task_sorts(due.served()), "created_at")


def api_sort_text(sort_text: str | None) -> str | None:
    """A sort of API_VERSION's clients in the newest version's names (what views parse)."""
    from taskflow import api_versions

    if sort_text is None:
        return None
    catalog = api_versions.CATALOG
    version = catalog.get(API_VERSION)
    assert version is not None, API_VERSION
    query = api_versions.upgrade_query(
        catalog.changes_after(version), "task", {"sort": [sort_text]}
    )
    return query["sort"][0]


def order_sql(sort_text: str) -> str:
    sort = server_sort(sort_text)
    column = {
        "due_date": "coalesce(due_date, 'infinity'::date)",
        "due_at": "coalesce(due_at, 'infinity'::timestamptz)",
    }
    parts = [
        f"{column.get(k.field.name, k.field.name)} {'DESC' if k.descending else 'ASC'}"
        for k in sort.keys
    ]
    return ", ".join([*parts, f"id {'DESC' if sort.id_descending else 'ASC'}"])


def boundary_rows(schema: str, tenant_id: int, sort_text: str, offsets: list[int]) -> list[Any]:
    """The row at each 0-based offset of the live tasks in `sort_text` order, in the order of
    `offsets` (one pass of SQL with row_number(), as the owner)."""
    with owner_connection() as conn:
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", [str(tenant_id)])
        rows = conn.execute(
            "SELECT rn, id, created_at, priority, due_at FROM ("
            " SELECT id, created_at, priority, due_at,"
            f" row_number() OVER (ORDER BY {order_sql(sort_text)}) - 1 AS rn"
            f" FROM {schema}.tasks WHERE tenant_id = %s AND deleted_at IS NULL) AS ordered"
            " WHERE rn = ANY(%s)",
            [tenant_id, offsets],
        ).fetchall()
    found = {
        r[0]: SimpleNamespace(id=r[1], created_at=r[2], priority=r[3], due_at=r[4]) for r in rows
    }
    missing = set(offsets) - set(found)
    assert not missing, f"no rows at offsets {sorted(missing)[:5]}"
    return [found[offset] for offset in offsets]


def taskflow_cursor(tenant_id: int, sort_text: str | None, row: Any) -> str:
    """The `next` cursor the server puts on the page whose last row is `row`.

    Built with the platform's own functions: parse_sort for the sort text, the fingerprint of
    the list's (empty) filters, each sort field's value_of and encode_cursor's HMAC.
    """
    from taskflow.filters import TaskFilters
    from taskflow.pagination import (
        Cursor,
        CursorScope,
        _json_value,
        encode_cursor,
        filters_fingerprint,
    )

    sort = server_sort(sort_text)
    scope = CursorScope(
        tenant_id,
        sort.text,
        filters_fingerprint({**TaskFilters().as_dict(), "deleted": False}),
        "tasks",
    )
    values = (*(_json_value(k.field.value_of(row)) for k in sort.keys), row.id)
    return encode_cursor(Cursor(values, False), scope)


def drf_cursor(row: Any) -> str:
    """DRF CursorPagination's cursor after `row` (ordering created_at): b64("p=<str(value)>")."""
    position = str(row.created_at.astimezone(UTC))
    return b64encode(urlencode({"p": position}).encode("ascii")).decode("ascii")


# --- Server ------------------------------------------------------------------------------------


class Server(GunicornServer):
    """gunicorn serving the benchmark settings (tests.processes.GunicornServer)."""

    def __init__(
        self, env: dict[str, str], workers: int, threads: int, tree: Path = ROOT, name: str = ""
    ) -> None:
        """Serve `tree`'s code (another checkout: its modules come first on PYTHONPATH, this
        venv's packages after them) with a cache key prefix of this server's own, so no entry
        or tombstone of another server or of the benchmark process is read."""
        self.tree = tree
        self.cache_prefix = f"tfbench-{name or 'server'}-{secrets.token_hex(4)}"
        env = {
            **env,
            "CACHE_KEY_PREFIX": self.cache_prefix,
            **({"PYTHONPATH": str(tree)} if tree != ROOT else {}),
        }
        super().__init__(
            env, workers=workers, threads=threads, host=HOST, worker_class=WORKER_CLASS, cwd=tree
        )


def cpu_since(before: dict[int, float], pids: list[int]) -> float:
    """CPU seconds used since `before` by `pids` (processes started since count in full; those
    that exited in between are lost, a backend or two that Django reconnects)."""
    return sum(now - before.get(pid, 0.0) for pid, now in cpu_by_pid(pids).items())


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = values[3] + values[4]
    ticks = os.sysconf("SC_CLK_TCK")
    return (sum(values) - idle) / ticks, sum(values) / ticks


class Http:
    """One keep-alive HTTP/1.1 connection to 127.0.0.1, sending the tenant's Host header."""

    def __init__(self, port: int, host: str, token: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {
            "Host": host,
            "Authorization": f"Bearer {token}",
            "TaskFlow-Version": API_VERSION,
        }

    def get(self, path: str) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        self.conn.request("GET", path, headers=self.headers)
        response = self.conn.getresponse()
        body = response.read()
        return response.status, body, (time.perf_counter() - started) * 1000

    def json(self, path: str) -> Any:
        status, body, _ = self.get(path)
        if status != 200:
            raise SystemExit(f"GET {path} -> {status}: {body[:500]!r}")
        return json.loads(body)


# --- 1. Page latency ---------------------------------------------------------------------------


def deep_paths(bench: Bench, sort_text: str) -> dict[str, str]:
    depth = (DEEP_PAGE - 1) * DEEP_LIMIT  # rows before page 10,000
    (last_of_previous,) = boundary_rows(bench.schema, bench.tenant_id, sort_text, [depth - 1])
    cursor = taskflow_cursor(bench.tenant_id, sort_text, last_of_previous)
    base = {"sort": sort_text, "limit": str(DEEP_LIMIT)}
    return {
        "page 1": f"/api/v1/tasks?{urlencode(base)}",
        f"page {DEEP_PAGE:,} keyset": f"/api/v1/tasks?{urlencode({**base, 'cursor': cursor})}",
        # Not under /api/: no version edge, so the sort goes in the newest version's names.
        f"page {DEEP_PAGE:,} OFFSET": "/bench/offset-tasks?"
        + urlencode({**base, "sort": api_sort_text(sort_text) or "", "offset": depth}),
    }


def check_deep_page(client: Http, paths: dict[str, str], total: int) -> None:
    keyset = client.json(paths[f"page {DEEP_PAGE:,} keyset"])
    offset = client.json(paths[f"page {DEEP_PAGE:,} OFFSET"])
    ids = [r["id"] for r in keyset["results"]]
    assert ids == [r["id"] for r in offset["results"]], "keyset and OFFSET pages differ"
    assert len(ids) == DEEP_LIMIT, f"page {DEEP_PAGE} has {len(ids)} rows"
    if total == DEEP_PAGE * DEEP_LIMIT:
        assert keyset["next"] is None, "page 10,000 should be the last page"
    assert keyset["previous"] is not None


def page_latency(
    client: Http, bench: Bench, requests: int, budget: float
) -> dict[str, dict[str, list[float]]]:
    """Interleaved requests of each page kind; a kind stops early once it has spent `budget`
    seconds and has at least MIN_SAMPLES samples (the slow OFFSET and unindexed sorts)."""
    results: dict[str, dict[str, list[float]]] = {}
    for sort_text in SORTS:
        paths = deep_paths(bench, sort_text)
        check_deep_page(client, paths, bench.tasks)
        for path in paths.values():  # untimed warm-up
            client.get(path)
        timings: dict[str, list[float]] = {label: [] for label in paths}
        for _ in range(requests):
            for label, path in paths.items():
                done = timings[label]
                if len(done) >= MIN_SAMPLES and sum(done) / 1000 > budget:
                    continue
                status, _, ms = client.get(path)
                assert status == 200, (path, status)
                done.append(ms)
        results[sort_text] = timings
    return results


# --- 2. Throughput -----------------------------------------------------------------------------

WRK_SCRIPT = r"""
local paths = {}
local counter = 0
function init(args)
  wrk.headers["Host"] = args[1]
  wrk.headers["Authorization"] = "Bearer " .. args[2]
  wrk.headers["TaskFlow-Version"] = args[4]
  for line in io.lines(args[3]) do paths[#paths + 1] = line end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  counter = math.random(#paths)
end
function request()
  counter = counter % #paths + 1
  return wrk.format("GET", paths[counter])
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "p50": %d, "p90": %d, "p99": %d, ' ..
    '"max": %d, "mean": %.1f, "connect": %d, "read": %d, "write": %d, "status": %d, ' ..
    '"timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status,
    e.timeout))
end
"""


def load_paths(bench: Bench) -> dict[str, list[str]]:
    """Each API's cycle of paths: a first page, then three cursor pages, 96 depths in all."""
    rng = random.Random(7)
    depths = sorted(rng.sample(range(1, bench.tasks - LOAD_LIMIT), LOAD_DEPTHS))
    rows = boundary_rows(bench.schema, bench.tenant_id, "created_at", [d - 1 for d in depths])
    rng.shuffle(rows)
    first = {
        "taskflow": f"/api/v1/tasks?limit={LOAD_LIMIT}",
        "drf": f"/bench/drf-tasks?limit={LOAD_LIMIT}",
    }
    paths: dict[str, list[str]] = {"taskflow": [], "drf": []}
    for i, row in enumerate(rows):
        if i % 3 == 0:
            for api in paths:
                paths[api].append(first[api])
        tf = quote(taskflow_cursor(bench.tenant_id, None, row), safe="")
        paths["taskflow"].append(f"{first['taskflow']}&cursor={tf}")
        paths["drf"].append(f"{first['drf']}&cursor={quote(drf_cursor(row), safe='')}")
    return paths


MIXED_SORT = "-priority,due_date"
FILTERED_FIRST_PAGES = (
    f"sort={MIXED_SORT}",
    "status=todo",
    f"status=todo,in_progress&sort={MIXED_SORT}",
    "status=done&sort=-updated_at",
)


def mixed_paths(bench: Bench) -> list[str]:
    """TaskFlow only (the DRF baseline sorts by created_at alone): the mixed-direction sort's
    cursor pages at LOAD_DEPTHS random depths, and one request in four a first page of a
    filtered list (status filters, with and without the mixed sort)."""
    rng = random.Random(11)
    depths = sorted(rng.sample(range(1, bench.tasks - LOAD_LIMIT), LOAD_DEPTHS))
    rows = boundary_rows(bench.schema, bench.tenant_id, MIXED_SORT, [d - 1 for d in depths])
    rng.shuffle(rows)
    base = f"/api/v1/tasks?limit={LOAD_LIMIT}"
    paths = []
    for i, row in enumerate(rows):
        if i % 3 == 0:
            paths.append(f"{base}&{FILTERED_FIRST_PAGES[(i // 3) % len(FILTERED_FIRST_PAGES)]}")
        cursor = quote(taskflow_cursor(bench.tenant_id, MIXED_SORT, row), safe="")
        paths.append(f"{base}&sort={quote(MIXED_SORT, safe='')}&cursor={cursor}")
    return paths


def check_load_paths(client: Http, paths: dict[str, list[str]]) -> None:
    for path in paths.get("mixed", []):
        assert client.json(path)["results"], path
    for tf_path, drf_path in zip(paths["taskflow"], paths["drf"], strict=True):
        tf, drf = client.json(tf_path), client.json(drf_path)
        tf_ids = [r["id"] for r in tf["results"]]
        assert len(tf_ids) == LOAD_LIMIT, (tf_path, len(tf_ids))
        assert tf_ids == [r["id"] for r in drf["results"]], ("APIs differ", tf_path, drf_path)
        assert tf["next"]
        assert drf["next"]


@dataclass
class Round:
    api: str
    number: int
    clients: int
    stats: dict[str, float]
    cpu: dict[str, float]

    @property
    def rps(self) -> float:
        return self.stats["requests"] / self.stats["duration_us"] * 1e6

    @property
    def normalised_rps(self) -> float:
        """Requests per second if gunicorn, its PostgreSQL backends and wrk had both cores."""
        used = self.cpu["gunicorn"] + self.cpu["postgres"] + self.cpu["wrk"]
        return self.stats["requests"] / used * (os.cpu_count() or 1)


def run_wrk(
    server: Server, token: str, path_file: str, script: str, connections: int, seconds: float
) -> dict[str, float]:
    completed = subprocess.run(
        ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{round(seconds)}s", "--timeout", "10s",
         "-s", script, f"http://127.0.0.1:{server.port}", "--", HOST, token, path_file, API_VERSION],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    match = re.search(r"^WRKJSON (.*)$", completed.stdout, re.MULTILINE)
    if not match:
        raise SystemExit(f"wrk printed no summary:\n{completed.stdout}\n{completed.stderr}")
    stats: dict[str, float] = json.loads(match.group(1))
    return stats


def open_loop(
    server: Server, token: str, paths: list[str], rate: float, seconds: float, senders: int = 16
) -> dict[str, float]:
    """Requests at a fixed arrival rate (paced, not closed loop), each timed from the moment it
    was due, so a late send counts its wait (no coordinated omission); `senders` threads with a
    keep-alive connection each take the next due request."""
    interval = 1 / rate
    total = int(rate * seconds)
    lock = threading.Lock()
    latencies: list[float] = []
    errors = [0]
    next_index = [0]
    start = time.perf_counter() + 0.2

    def sender() -> None:
        client = Http(server.port, HOST, token)
        while True:
            with lock:
                index = next_index[0]
                next_index[0] += 1
            if index >= total:
                return
            due = start + index * interval
            wait = due - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            status, _, _ = client.get(paths[index % len(paths)])
            done = time.perf_counter()
            with lock:
                latencies.append((done - due) * 1e6)
                if status != 200:
                    errors[0] += 1

    threads = [threading.Thread(target=sender) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ordered = sorted(latencies)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    return {
        "requests": float(len(ordered)), "duration_us": seconds * 1e6, "p50": at(0.5),
        "p90": at(0.9), "p99": at(0.99), "max": ordered[-1], "mean": sum(ordered) / len(ordered),
        "connect": 0.0, "read": 0.0, "write": 0.0, "status": float(errors[0]), "timeout": 0.0,
        "rate": rate,
    }  # fmt: skip


def drain(server: Server) -> None:
    """Wait until the requests a finished wrk run left queued in gunicorn are served, so the next
    run does not start behind them (with 32 clients that backlog is ~32 requests)."""
    probe = Http(server.port, HOST, "")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        time.sleep(0.5)
        if all(probe.get("/healthz")[2] < 20 for _ in range(3)):
            return


def postgres_backends() -> list[int]:
    with owner_connection() as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
            [BENCH_DB],
        ).fetchall()
    return [r[0] for r in rows]


def throughput(
    server: Server,
    bench: Bench,
    connections: int,
    duration: float,
    rounds: int,
    warmup: float,
    few: list[int],
) -> list[Round]:
    paths = load_paths(bench)
    paths["mixed"] = mixed_paths(bench)
    check_load_paths(Http(server.port, HOST, bench.token), paths)
    workdir = Path(tempfile.mkdtemp(prefix="bench-wrk-"))
    try:
        script = workdir / "paths.lua"
        script.write_text(WRK_SCRIPT)
        files = {}
        for api, api_paths in paths.items():
            files[api] = workdir / f"{api}.txt"
            files[api].write_text("\n".join(api_paths) + "\n")
        for api in paths:  # warm every worker's thread pool, connection pools and caches
            run_wrk(server, bench.token, str(files[api]), str(script), connections, warmup)

        def measured(api: str, number: int, clients: int, seconds: float) -> Round:
            drain(server)
            workers = server.worker_pids()
            before_app, before_pg = cpu_by_pid(workers), cpu_by_pid(postgres_backends())
            before_busy = machine_cpu()[0]
            wrk_before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            stats = run_wrk(server, bench.token, str(files[api]), str(script), clients, seconds)
            wall = time.perf_counter() - started
            wrk_after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpu = {
                "wall": wall,
                "gunicorn": cpu_since(before_app, workers),
                "postgres": cpu_since(before_pg, postgres_backends()),
                "wrk": (wrk_after.ru_utime + wrk_after.ru_stime)
                - (wrk_before.ru_utime + wrk_before.ru_stime),
                "busy": machine_cpu()[0] - before_busy,
            }
            cpu["other"] = cpu["busy"] - cpu["gunicorn"] - cpu["postgres"] - cpu["wrk"]
            measured_round = Round(api, number, clients, stats, cpu)
            print(
                f"  {api} {clients} clients round {number}: {measured_round.rps:.0f} req/s,"
                f" p99 {stats['p99'] / 1000:.1f} ms, other load {cpu['other'] / wall:.2f} cores",
                file=sys.stderr,
            )
            return measured_round

        results = [
            measured(api, number, connections, duration)
            for number in range(1, rounds + 1)
            for api in ("taskflow", "drf", "mixed")
        ]
        # Service time with little or no queueing: one client, then a few, the same paths.
        results += [
            measured(api, 1, clients, max(duration / 2, 5))
            for clients in few
            for api in ("taskflow", "drf", "mixed")
        ]
        # Open loop at half the measured capacity: the p99 a paced arrival rate sees.
        for api in ("taskflow", "mixed") if few else ():
            mine = [r for r in results if r.api == api and r.clients == connections]
            rate = sum(r.rps for r in mine) / len(mine) / 2
            drain(server)
            stats = open_loop(server, bench.token, paths[api], rate, max(duration / 2, 5))
            results.append(Round(f"{api}@rate", 1, 0, stats, {"wall": 1.0}))
            print(f"  {api} open loop at {rate:.0f} req/s: p99 {stats['p99'] / 1000:.1f} ms",
                  file=sys.stderr)  # fmt: skip
        # The floor: the cheapest answer this server gives (no tenant, no auth, no query).
        files["floor"] = workdir / "floor.txt"
        files["floor"].write_text("/healthz\n")
        results.append(measured("floor", 1, connections, max(duration / 2, 5)))
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


# --- 3. EXPLAIN --------------------------------------------------------------------------------


def captured_selects(run: Any) -> list[tuple[str, Any]]:
    """The tasks SELECTs that `run(session)` executes, as sent to PostgreSQL (a mixed-direction
    keyset page reads a second index range when the first runs out)."""
    from sqlalchemy import event

    from tenants.binding import engine

    seen: list[tuple[str, Any]] = []

    def capture(
        conn: Any, cursor: Any, statement: str, params: Any, context: Any, many: Any
    ) -> None:
        if "FROM" in statement and ".tasks" in statement:
            seen.append((statement, params))

    event.listen(engine(), "before_cursor_execute", capture)
    try:
        run()
    finally:
        event.remove(engine(), "before_cursor_execute", capture)
    assert seen
    return seen


PLAN_LINE = re.compile(
    r"(->|^\S|Index Cond|Filter:|Rows Removed|Sort Method|Presorted|Execution Time|Planning Time)"
)


def explain(tenant: Any, bench: Bench) -> dict[str, list[str]]:
    from taskflow import selectors
    from taskflow.filters import TaskFilters
    from tenants.binding import binding_for, tenant_session
    from tests.benchmarks.taskflow_api.views import offset_statement

    plans: dict[str, list[str]] = {}
    binding = binding_for(tenant)
    depth = (DEEP_PAGE - 1) * DEEP_LIMIT
    for sort_text in SORTS:
        (row,) = boundary_rows(bench.schema, bench.tenant_id, sort_text, [depth - 1])
        cursor = taskflow_cursor(bench.tenant_id, sort_text, row)
        query = selectors.ListQuery(sort=api_sort_text(sort_text), cursor=cursor, limit=DEEP_LIMIT)
        sort = server_sort(sort_text)

        def keyset(query: selectors.ListQuery = query) -> None:
            with tenant_session(binding) as session:
                selectors.task_list(
                    session=session, tenant_id=bench.tenant_id,
                    filters=TaskFilters(), query=query,
                )  # fmt: skip

        def offset(sort: Any = sort) -> None:
            with tenant_session(binding) as session:
                session.execute(offset_statement(bench.tenant_id, sort, depth, DEEP_LIMIT)).all()

        for label, run in (("keyset", keyset), ("OFFSET", offset)):
            selects = captured_selects(run)
            for number, (statement, params) in enumerate(selects, 1):
                lines: list[str] = []
                for _ in range(3):  # the last of three runs: caches as warm as the latency test's
                    with tenant_session(binding) as session:
                        result = session.connection().exec_driver_sql(
                            f"EXPLAIN (ANALYZE, BUFFERS) {statement}", params
                        )
                        lines = [r[0] for r in result]
                part = f" (query {number} of {len(selects)})" if len(selects) > 1 else ""
                title = f"{sort_text} page {DEEP_PAGE:,} {label}{part}"
                plans[title] = [statement, *summary(lines)]
    return plans


def summary(plan: list[str]) -> list[str]:
    """The plan's node lines, conditions, rows removed, sorts and times; the top Buffers line."""
    kept = [ln for ln in plan if PLAN_LINE.search(ln) and ln.strip() not in ("JIT:", "Planning:")]
    kept.insert(1, next((ln for ln in plan if "Buffers:" in ln), ""))
    return kept


# --- Report ------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def report(
    bench: Bench,
    args: argparse.Namespace,
    server_info: dict[str, Any],
    latency: dict[str, dict[str, list[float]]],
    rounds: list[Round],
    plans: dict[str, list[str]],
    steps: list[Any],
) -> str:
    ncpu = os.cpu_count() or 1
    load = bench.load
    lines = [
        f"TaskFlow API benchmark: PostgreSQL {server_info['pg']}, Python "
        f"{stdlib_platform.python_version()}, {ncpu} CPUs, load average {server_info['load'][0]:.2f}"
        f" before, {os.getloadavg()[0]:.2f} after (other work on the machine shows in the figures)",
        f"data: {bench.tasks:,} live tasks, {PROJECTS} projects, one schema-mode tenant"
        f" ({bench.schema})"
        + (
            f"; tasks table + indexes {load['size_mb']:,.0f} MB; load {load['total']:.1f} s"
            f" (INSERT ... SELECT generate_series {load['insert']:.1f} s, history triggers off;"
            f" {load['index_count']:.0f} indexes + {load['constraint_count']:.0f} unique/foreign"
            f" keys dropped before and made after, {load['indexes']:.1f} s;"
            f" VACUUM ANALYZE {load['vacuum_analyze']:.1f} s)"
            if "total" in load
            else " (reused database)"
        ),
        f"server: gunicorn {server_info['gunicorn']} gthread, {args.workers} workers x "
        f"{args.threads} threads, keep-alive, DEBUG off; both APIs authenticate with the"
        " platform's BearerTokenAuthentication (IsAuthenticated + TenantRole)",
    ]
    if latency:
        lines += ["", *latency_table(latency)]
    if rounds:
        lines += ["", *throughput_table(args, rounds)]
    if plans:
        lines += [
            "",
            "3. EXPLAIN (ANALYZE, BUFFERS) of the SQL each page-10,000 request runs (3rd run;"
            " summary lines)",
        ]
        for label, (statement, *plan) in plans.items():
            flat = re.sub(
                r"^SELECT .*? FROM ", "SELECT <columns> FROM ", " ".join(statement.split())
            )
            lines += [f"  {label}:", "    SQL: " + flat, *(f"    {ln}" for ln in plan)]
    if steps:
        lines += ["", *breakdown_table(args, steps)]
    return "\n".join(lines)


def breakdown_table(args: argparse.Namespace, steps: list[Any]) -> list[str]:
    lines = [
        f"4. Where a list request's time goes (limit={LOAD_LIMIT}, first page): each step alone,"
        f" in-process, sequential, {args.breakdown_requests} calls; ms per call",
        f"{'step':<72} {'wall':>7} {'cpu':>7}  note",
    ]
    width = 72 + 8 * 2 + 2 + 36
    lines.append("-" * width)
    lines += [f"{s.label:<72} {s.wall_ms:>7.2f} {s.cpu_ms:>7.2f}  {s.note}" for s in steps]
    lines.append("-" * width)
    return lines


def latency_table(latency: dict[str, dict[str, list[float]]]) -> list[str]:
    depth = (DEEP_PAGE - 1) * DEEP_LIMIT
    lines = [
        f"1. Page latency through gunicorn: one sequential keep-alive client, limit={DEEP_LIMIT},"
        f" ms; page {DEEP_PAGE:,} = rows {depth + 1:,}..{depth + DEEP_LIMIT:,}",
        f"   keyset cursor of page {DEEP_PAGE:,} minted from the {depth:,}th row's keys (found by"
        " SQL) with taskflow.pagination.encode_cursor; OFFSET via /bench/offset-tasks",
        f"{'sort':<20} {'page':<22} {'n':>4} {'p50':>8} {'p95':>8} {'max':>8}"
        f"  {'vs page 1 p50/p95':<18} {'target':<8} result",
    ]
    width = 20 + 22 + 4 + 9 * 3 + 2 + 18 + 9 + 7
    lines.append("-" * width)
    for sort_text, timings in latency.items():
        first = timings["page 1"]
        for label, values in timings.items():
            ratio50, ratio95 = p50(values) / p50(first), pct(values, 95) / pct(first, 95)
            ratios = "" if label == "page 1" else f"{ratio50:6.2f}x / {ratio95:5.2f}x"
            target, result = "", ""
            if "keyset" in label:
                target, result = f"<={TARGET_DEPTH_RATIO}x", verdict(ratio50 <= TARGET_DEPTH_RATIO)
            lines.append(
                f"{sort_text:<20} {label:<22} {len(values):>4} {p50(values):>8.2f}"
                f" {pct(values, 95):>8.2f} {max(values):>8.2f}  {ratios:<18} {target:<8} {result}"
            )
    lines.append("-" * width)
    return lines


def throughput_table(args: argparse.Namespace, rounds: list[Round]) -> list[str]:
    lines = [
        f"2. Throughput: wrk -t2 -c{args.connections} (keep-alive, closed loop), {args.duration:g} s"
        f" rounds after a {args.warmup:g} s warm-up of each API, then short rounds of"
        f" {sorted({1, *args.few_clients}) if not args.skip_latency else 'no'} clients (service"
        " time with little queueing);"
        f" limit={LOAD_LIMIT}; 1 request in 4 a first page, the rest cursor pages at {LOAD_DEPTHS} random depths (the same rows from both APIs)",
        "   wrk, gunicorn and PostgreSQL share the machine's CPUs. cpu columns: CPU-seconds per"
        " second of wall time (2.00 = both cores); other = everything else running on the machine.",
        "   norm req/s = requests / CPU-seconds of (gunicorn + its PostgreSQL backends + wrk) x"
        f" {os.cpu_count()}: the rate if those three had the cores to themselves",
        f"{'API':<28} {'clients':>7} {'round':>5} {'requests':>8} {'req/s':>6} {'norm':>6}"
        f" {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7} {'err':>4}  {'gunicorn':>8}"
        f" {'postgres':>8} {'wrk':>5} {'other':>5}",
    ]
    width = 28 + 8 + 6 + 9 + 7 * 2 + 8 * 4 + 5 + 2 + 9 * 2 + 6 * 2
    lines.append("-" * width)
    labels = {
        "taskflow": "TaskFlow /api/v1/tasks",
        "drf": "DRF + ORM CursorPagination",
        "floor": "floor: GET /healthz",
        "mixed": "TaskFlow mixed sort+filters",
    }
    for r in rounds:
        if r.api.endswith("@rate"):
            continue
        s, c = r.stats, r.cpu
        errors = s["connect"] + s["read"] + s["write"] + s["status"] + s["timeout"]
        lines.append(
            f"{labels[r.api]:<28} {r.clients:>7} {r.number:>5} {s['requests']:>8.0f}"
            f" {r.rps:>6.0f} {r.normalised_rps:>6.0f}"
            f" {s['p50'] / 1000:>7.1f} {s['p90'] / 1000:>7.1f} {s['p99'] / 1000:>7.1f}"
            f" {s['max'] / 1000:>7.1f} {errors:>4.0f}  {c['gunicorn'] / c['wall']:>8.2f}"
            f" {c['postgres'] / c['wall']:>8.2f} {c['wrk'] / c['wall']:>5.2f}"
            f" {c['other'] / c['wall']:>5.2f}"
        )
    lines.append("-" * width)

    def total(api: str) -> dict[str, float]:
        mine = [r for r in rounds if r.api == api and r.clients == args.connections]
        single = next((r for r in rounds if r.api == api and r.clients == 1), None)
        nan = float("nan")
        requests = sum(r.stats["requests"] for r in mine)
        used = sum(r.cpu["gunicorn"] + r.cpu["postgres"] + r.cpu["wrk"] for r in mine)
        return {
            "rps": requests / sum(r.stats["duration_us"] for r in mine) * 1e6,
            "norm": requests / used * (os.cpu_count() or 1),
            "p99": max(r.stats["p99"] for r in mine) / 1000,
            "app_ms": sum(r.cpu["gunicorn"] for r in mine) / requests * 1000,
            "pg_ms": sum(r.cpu["postgres"] for r in mine) / requests * 1000,
            "wrk_ms": sum(r.cpu["wrk"] for r in mine) / requests * 1000,
            "single_p50": single.stats["p50"] / 1000 if single else nan,
            "single_p99": single.stats["p99"] / 1000 if single else nan,
        }

    tf, drf, mixed = total("taskflow"), total("drf"), total("mixed")
    ratio, norm_ratio = tf["rps"] / drf["rps"], tf["norm"] / drf["norm"]
    clients = args.connections
    lines += [
        f"req/s, {clients} clients, all rounds: TaskFlow {tf['rps']:.0f} vs DRF {drf['rps']:.0f}"
        f" = {ratio:.2f}x   target >= {TARGET_RPS_RATIO}x  {verdict(ratio >= TARGET_RPS_RATIO)}"
        f"   (CPU-normalised: {tf['norm']:.0f} vs {drf['norm']:.0f} = {norm_ratio:.2f}x)",
        f"TaskFlow p99, {clients} clients, worst round: {tf['p99']:.1f} ms   target <="
        f" {TARGET_P99_MS:g} ms  {verdict(tf['p99'] <= TARGET_P99_MS)}   (DRF {drf['p99']:.1f} ms);"
        f" one client: TaskFlow p50 {tf['single_p50']:.1f} / p99 {tf['single_p99']:.1f} ms,"
        f" DRF {drf['single_p50']:.1f} / {drf['single_p99']:.1f} ms",
        "p99 by clients (short rounds): "
        + ", ".join(
            f"{r.clients}: TaskFlow {r.stats['p99'] / 1000:.1f} ms"
            f" ({verdict(r.stats['p99'] / 1000 <= TARGET_P99_MS)}) DRF {d.stats['p99'] / 1000:.1f}"
            for r in rounds
            if r.api == "taskflow" and r.clients < clients
            for d in rounds
            if d.api == "drf" and d.clients == r.clients
        ),
        f"CPU per request ({clients} clients): TaskFlow {tf['app_ms']:.2f} ms in gunicorn +"
        f" {tf['pg_ms']:.2f} ms in PostgreSQL; DRF {drf['app_ms']:.2f} ms + {drf['pg_ms']:.2f} ms",
        f"Mixed-direction sort ({MIXED_SORT}) and filtered lists, {clients} clients: TaskFlow"
        f" {mixed['rps']:.0f} req/s (CPU-normalised {mixed['norm']:.0f}) = {mixed['rps'] / tf['rps']:.2f}x"
        f" of its default sort, p99 {mixed['p99']:.1f} ms; CPU per request {mixed['app_ms']:.2f}"
        f" ms in gunicorn + {mixed['pg_ms']:.2f} ms in PostgreSQL (+ {mixed['wrk_ms']:.2f} ms wrk);"
        f" all-in default sort {tf['app_ms'] + tf['pg_ms'] + tf['wrk_ms']:.2f} ms, mixed"
        f" {mixed['app_ms'] + mixed['pg_ms'] + mixed['wrk_ms']:.2f} ms (target <= 2.5 ms)",
        *(
            f"Open loop at half the measured capacity ({r.stats['rate']:.0f} req/s, paced, timed"
            f" from each request's due time), {r.api.removesuffix('@rate')}: p50"
            f" {r.stats['p50'] / 1000:.1f} ms, p99 {r.stats['p99'] / 1000:.1f} ms, max"
            f" {r.stats['max'] / 1000:.1f} ms, non-200 {r.stats['status']:.0f}"
            for r in rounds
            if r.api.endswith("@rate")
        ),
        *ceiling_lines(tf, rounds, clients),
        f"closed loop: {clients} clients / {tf['rps']:.0f} req/s ="
        f" {clients / tf['rps'] * 1000:.0f} ms mean TaskFlow latency (Little's law, queueing"
        f" included); a p99 <= {TARGET_P99_MS:g} ms with {clients} clients needs well over"
        f" {clients / TARGET_P99_MS * 1000:.0f} req/s",
    ]
    return lines


def ceiling_lines(tf: dict[str, float], rounds: list[Round], clients: int) -> list[str]:
    """What the CPU allows: requests/s if the cores did nothing else, and the mean latency of
    `clients` closed-loop clients at that rate (Little's law), for TaskFlow and the floor."""
    ncpu = os.cpu_count() or 1
    per_request = tf["app_ms"] + tf["pg_ms"] + tf["wrk_ms"]
    best = ncpu * 1000 / per_request
    lines = [
        f"CPU ceiling on {ncpu} cores: TaskFlow {per_request:.2f} ms CPU per request (gunicorn +"
        f" PostgreSQL + wrk) -> at most {best:.0f} req/s -> at least {clients / best * 1000:.0f} ms"
        f" mean latency for {clients} clients; p99 <= {TARGET_P99_MS:g} ms needs <="
        f" {ncpu * TARGET_P99_MS / clients:.2f} ms CPU per request, queueing aside"
    ]
    floor = next((r for r in rounds if r.api == "floor"), None)
    if floor is not None:
        used = floor.cpu["gunicorn"] + floor.cpu["wrk"]
        floor_ms = used / floor.stats["requests"] * 1000
        lines.append(
            f"floor: GET /healthz (gunicorn + Django, no tenant, auth or query) costs"
            f" {floor_ms:.2f} ms CPU per request -> at most {ncpu * 1000 / floor_ms:.0f} req/s,"
            f" {clients / (ncpu * 1000 / floor_ms) * 1000:.0f} ms mean latency for {clients}"
            " clients"
        )
    return lines


# --- Main --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200, help="per page kind and sort")
    parser.add_argument(
        "--budget",
        type=float,
        default=60,
        help="seconds per page kind after which it stops at >= 20 samples (slow pages)",
    )
    parser.add_argument("--breakdown-requests", type=int, default=300, help="0 skips section 4")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=4, help="threads per gthread worker")
    parser.add_argument("--connections", type=int, default=32, help="concurrent wrk clients")
    parser.add_argument("--duration", type=float, default=20, help="seconds per wrk round")
    parser.add_argument("--warmup", type=float, default=5, help="wrk warm-up seconds per API")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--few-clients",
        type=lambda text: [int(n) for n in text.split(",")],
        default=[1, 4, 8],
        help="client counts of the short rounds after the main ones (1 is always run)",
    )
    parser.add_argument(
        "--skip-latency",
        action="store_true",
        help="CPU only: no page-latency section, no few-client or open-loop rounds",
    )
    parser.add_argument(
        "--tree", type=Path, default=ROOT, help="the checkout to serve (default: this one)"
    )
    parser.add_argument(
        "--tenant-save",
        action="store_true",
        help="with --baseline-tree: save the tenant (a rename) before every round, its cache"
        " forgets written where that round's server reads them",
    )
    parser.add_argument(
        "--baseline-tree",
        type=Path,
        help="another checkout (git worktree add /tmp/base main) served side by side on the same"
        " database; replaces section 2 with interleaved rounds of both trees",
    )
    parser.add_argument("--skip-load", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept database")
    args = parser.parse_args()
    if args.tasks < DEEP_PAGE * DEEP_LIMIT and not args.skip_latency:
        parser.error(f"--tasks must be at least {DEEP_PAGE * DEEP_LIMIT:,} to reach page 10,000")
    if shutil.which("wrk") is None and not args.skip_load:
        parser.error("wrk is not on PATH (apt-get install wrk)")

    os.chdir(ROOT)
    secret_key = "bench-" + secrets.token_urlsafe(48)
    env = bench_env(secret_key)
    keep = args.keep or args.reuse
    try:
        if not args.reuse:
            print(f"creating database {BENCH_DB} ...", file=sys.stderr)
            create_database(BENCH_DB)
            subprocess.run(
                [PY, "manage.py", "setup_platform"], cwd=ROOT, check=True,
                env={**env, "DJANGO_SETTINGS_MODULE": "control_plane.settings"},
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        os.environ.update(env)  # before django.setup(): settings read the environment
        import django

        django.setup()
        from django.db import connection

        load_before = os.getloadavg()
        tenant, token = make_bench_tenant(args.reuse)
        bench = Bench(tenant.pk, tenant.schema_name, token, args.tasks)
        if args.reuse:
            bench.tasks = count_tasks(bench.schema, bench.tenant_id)
            bench.load["size_mb"] = 0
        else:
            print(f"loading {args.tasks:,} tasks ...", file=sys.stderr)
            bench.load = load_tasks(bench.schema, bench.tenant_id, args.tasks)
        connection.close()
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            pg_version = cursor.fetchone()[0]
        connection.close()

        latency: dict[str, dict[str, list[float]]] = {}
        rounds: list[Round] = []
        side_by_side: list[str] = []
        if not args.skip_latency or (not args.skip_load and not args.baseline_tree):
            server = Server(env, args.workers, args.threads, tree=args.tree.resolve())
            try:
                if not args.skip_latency:
                    print("page latency ...", file=sys.stderr)
                    latency = page_latency(
                        Http(server.port, HOST, token), bench, args.requests, args.budget
                    )
                if not args.skip_load and not args.baseline_tree:
                    print("throughput ...", file=sys.stderr)
                    rounds = throughput(
                        server, bench, args.connections, args.duration, args.rounds,
                        args.warmup, [] if args.skip_latency else sorted({1, *args.few_clients}),
                    )  # fmt: skip
            finally:
                server.stop()
        if args.baseline_tree and not args.skip_load:
            from tests.benchmarks.taskflow_api import side_by_side as trees

            print("side by side ...", file=sys.stderr)
            paths = {"taskflow": load_paths(bench)["taskflow"], "mixed": mixed_paths(bench)}
            results, checkouts = trees.run(env, args, token, paths, tenant)
            side_by_side = trees.table(
                results, checkouts, args.connections, args.duration, args.tenant_save
            )
        plans: dict[str, list[str]] = {}
        if bench.tasks >= DEEP_PAGE * DEEP_LIMIT:  # page 10,000 exists
            print("EXPLAIN ...", file=sys.stderr)
            plans = explain(tenant, bench)
        steps: list[Any] = []
        if args.breakdown_requests:
            from tests.benchmarks.taskflow_api.breakdown import breakdown

            print("breakdown ...", file=sys.stderr)
            steps = breakdown(tenant, token, HOST, LOAD_LIMIT, args.breakdown_requests)
        info = {
            "pg": pg_version,
            "gunicorn": importlib.metadata.version("gunicorn"),
            "load": load_before,
        }
        print(report(bench, args, info, latency, rounds, plans, steps))
        if side_by_side:
            print("", *side_by_side, sep="\n")
    finally:
        if not keep:
            drop_database(BENCH_DB)


if __name__ == "__main__":
    main()

"""Schema-per-tenant against the shared RLS schema, on the same workload, side by side.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with superuser `postgres`, Redis):

    .venv/bin/python -m tests.benchmarks.bench_placement [--tenants 100] [--tasks 10000] [--requests 400] [--keep]

In one throw-away database (`taskflow_bench_placement`) the platform holds `--tenants` tenants in
each mode, each with `--tasks` tasks (loaded with INSERT ... SELECT, history triggers standing
down as they do for a move). Then, alternating between the modes request by request so both see
the same machine load, the full Django + DRF + SQLAlchemy stack answers (in-process test client,
bearer token, tenant resolution from the Redis cache): the first page of tasks, a deep page
(cursor at row tasks-100), a get by id, and a patch with If-Match. Also: onboarding time (the
clone path, no spare schema ready), the time to apply one migration's DDL (a nullable column and
an index) to every tenant's tasks table, and the catalog each mode costs. Target: RLS API
overhead <= 10% at p50 over schema mode. Then the cost of row-level security in schema mode
itself: every other schema-mode tenant has its policies switched off, and the same operations
alternate between the two halves. Target: <= 2% at p50. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from tests.benchmarks.bench_onboarding import ROOT, bench_env, create_database, drop_database

DB = "taskflow_bench_placement"
TARGET_OVERHEAD = 0.10
TARGET_POLICY_OVERHEAD = 0.02


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def setup_database() -> dict[str, str]:
    import subprocess

    create_database(DB)
    env = bench_env(DB, "control_plane.settings")
    subprocess.run(
        [sys.executable, "manage.py", "setup_platform"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return env


def onboard_all(count: int) -> dict[str, list[Any]]:
    """`count` tenants per mode through the onboarding service; returns tenants, tokens, times."""
    from django.conf import settings

    from control_plane.tenancy.onboarding import (
        provision_onboarding,
        request_onboarding,
        validate_onboarding,
    )

    settings.SPARE_SCHEMAS = 0
    made: dict[str, list[Any]] = {"schema": [], "rls": []}
    for i in range(count):
        for mode in ("schema", "rls"):
            slug = f"{mode[0]}{i:04d}"
            data = validate_onboarding(
                name=slug, slug=slug, domain=f"{slug}.bench.localhost", isolation=mode,
                owner_email=f"{slug}@bench.example",
            )  # fmt: skip
            requested = request_onboarding(data=data, enqueue=False)
            started = time.perf_counter()
            provision_onboarding(requested.onboarding.pk)
            elapsed = (time.perf_counter() - started) * 1000
            requested.onboarding.tenant.refresh_from_db()
            made[mode].append((requested.onboarding.tenant, requested.token, elapsed))
    return made


def load_tasks(made: dict[str, list[Any]], per_tenant: int) -> None:
    """Projects and tasks for every tenant, written as the owner in set-based statements."""
    from tenants.database_roles import owner_connection
    from tenants.placement import SHARED_SCHEMA

    with owner_connection(autocommit=True) as conn:
        for mode, tenants in made.items():
            for tenant, _token, _ms in tenants:
                schema = tenant.schema_name if mode == "schema" else SHARED_SCHEMA
                with conn.transaction():
                    conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant.pk),))
                    conn.execute("SELECT set_config('app.copying_tenant', 'on', true)")
                    (project_id,) = conn.execute(
                        f'INSERT INTO "{schema}".projects (tenant_id, key, name) VALUES (%s, %s, %s) RETURNING id',
                        (tenant.pk, "BENCH", "Bench"),
                    ).fetchone()  # type: ignore[misc]
                    conn.execute(
                        f'INSERT INTO "{schema}".tasks (tenant_id, project_id, title, priority, status, due_date, created_at, updated_at)'
                        " SELECT %s, %s, 'task ' || g, g %% 5, (ARRAY['todo','in_progress','done'])[1 + g %% 3],"
                        " CASE WHEN g %% 4 = 0 THEN NULL ELSE date '2030-01-01' + (g %% 365) END,"
                        " now() - make_interval(secs => g), now() - make_interval(secs => g)"
                        " FROM generate_series(1, %s) g",
                        (tenant.pk, project_id, per_tenant),
                    )
        conn.execute("ANALYZE")


def deep_cursor(tenant: Any, schema: str, per_tenant: int) -> str:
    """A next-cursor at row per_tenant - 100 of the default sort, as a client would hold it."""
    from taskflow.pagination import (
        Cursor,
        CursorScope,
        encode_cursor,
        filters_fingerprint,
        parse_sort,
    )
    from taskflow.selectors import TASK_SORTS
    from tenants.database_roles import owner_connection

    with owner_connection() as conn, conn.transaction():
        conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant.pk),))
        row = conn.execute(
            f'SELECT created_at, id FROM "{schema}".tasks WHERE tenant_id = %s AND deleted_at IS NULL'
            " ORDER BY created_at, id OFFSET %s LIMIT 1",
            (tenant.pk, per_tenant - 100),
        ).fetchone()
    assert row is not None
    sort = parse_sort(None, TASK_SORTS, "created_at")
    filters = filters_fingerprint({"status": [], "project": None, "assignee": None, "due_before": None,
                                   "due_after": None, "q": None, "deleted": False})  # fmt: skip
    scope = CursorScope(tenant.pk, sort.text, filters, "tasks")
    return encode_cursor(Cursor((row[0].isoformat(), row[1]), False), scope)


def measure_api(
    made: dict[str, list[Any]], per_tenant: int, requests: int
) -> dict[str, dict[str, list[float]]]:
    """p50/p99 samples per operation and group of tenants (the keys of `made`), alternating
    between the groups request by request so both see the same machine load."""
    from django.test import Client

    from tenants.placement import SHARED_SCHEMA

    rng = random.Random(7)
    clients: dict[str, list[tuple[Client, Any, str, list[int]]]] = {}
    for mode, tenants in made.items():
        clients[mode] = []
        for tenant, token, _ms in tenants:
            client = Client(
                HTTP_HOST=f"{tenant.slug}.bench.localhost",
                headers={"Authorization": f"Bearer {token}"},
            )
            schema = tenant.schema_name if tenant.isolation == "schema" else SHARED_SCHEMA
            ids = [t["id"] for t in client.get("/api/v1/tasks", {"limit": 200}).json()["results"]]
            clients[mode].append((client, tenant, deep_cursor(tenant, schema, per_tenant), ids))
    operations: dict[str, Callable[[Client, str, list[int]], Any]] = {
        "first page": lambda c, cur, ids: c.get("/api/v1/tasks", {"limit": 50}),
        "deep page": lambda c, cur, ids: c.get("/api/v1/tasks", {"limit": "50", "cursor": cur}),
        "get by id": lambda c, cur, ids: c.get(f"/api/v1/tasks/{rng.choice(ids)}"),
        "patch with version": lambda c, cur, ids: patch(c, rng.choice(ids)),
    }
    groups = list(made)
    times: dict[str, dict[str, list[float]]] = {op: {g: [] for g in groups} for op in operations}
    for round_ in range(requests + 20):
        for name, operation in operations.items():
            for mode in groups if round_ % 2 else groups[::-1]:
                client, _tenant, cursor, ids = clients[mode][round_ % len(clients[mode])]
                started = time.perf_counter()
                response = operation(client, cursor, ids)
                elapsed = (time.perf_counter() - started) * 1000
                assert response.status_code == 200, response.content
                if round_ >= 20:  # the first rounds warm caches and pools
                    times[name][mode].append(elapsed)
    return times


def measure_tenant_policies(
    made: dict[str, list[Any]], per_tenant: int, requests: int
) -> dict[str, dict[str, list[float]]]:
    """Schema mode with its forced row-level security policies against the same without them:
    every other schema-mode tenant has RLS disabled on its tables for this measurement."""
    from psycopg import sql

    from tenants.database_roles import owner_connection

    guarded, bare = made["schema"][::2], made["schema"][1::2]
    with owner_connection(autocommit=True) as conn:
        for tenant, _token, _ms in bare:
            tables = conn.execute(
                "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace AND relrowsecurity",
                (tenant.schema_name,),
            ).fetchall()
            for (table,) in tables:
                conn.execute(
                    sql.SQL(
                        "ALTER TABLE {} NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY"
                    ).format(sql.Identifier(tenant.schema_name, table))
                )
    return measure_api({"policies": guarded, "none": bare}, per_tenant, requests)


def policies_report(times: dict[str, dict[str, list[float]]]) -> str:
    lines = [
        "",
        "Schema mode: tenant schemas with forced RLS policies vs the same without (ms)",
        f"{'operation':<22} {'with p50':>10} {'with p99':>10} {'none p50':>10} {'none p99':>10} {'overhead p50':>13}",
        "-" * 80,
    ]
    worst = -1.0
    for name, groups in times.items():
        w50, w99 = p(groups["policies"], 0.5), p(groups["policies"], 0.99)
        n50, n99 = p(groups["none"], 0.5), p(groups["none"], 0.99)
        worst = max(worst, w50 / n50 - 1)
        lines.append(
            f"{name:<22} {w50:>10.2f} {w99:>10.2f} {n50:>10.2f} {n99:>10.2f} {(w50 / n50 - 1) * 100:>+12.1f}%"
        )
    lines += [
        "-" * 80,
        f"worst policy overhead at p50: {worst * 100:+.1f}%   target <= {TARGET_POLICY_OVERHEAD * 100:.0f}%   "
        + ("PASS" if worst <= TARGET_POLICY_OVERHEAD else "MISS"),
    ]
    return "\n".join(lines)


def patch(client: Any, task_id: int) -> Any:
    current = client.get(f"/api/v1/tasks/{task_id}")
    return client.patch(
        f"/api/v1/tasks/{task_id}", {"priority": random.randint(0, 4)}, content_type="application/json",
        headers={"If-Match": current["ETag"]},
    )  # fmt: skip


def migration_time(made: dict[str, list[Any]]) -> dict[str, float]:
    """One migration's DDL (nullable column + index) on every tenant's placement, one connection."""
    from tenants.database_roles import owner_connection
    from tenants.placement import SHARED_SCHEMA

    ddl = 'ALTER TABLE "{s}".tasks ADD COLUMN bench_note text; CREATE INDEX ON "{s}".tasks (tenant_id, bench_note)'
    out = {}
    with owner_connection(autocommit=True) as conn:
        started = time.perf_counter()
        for tenant, _token, _ms in made["schema"]:
            with conn.transaction():
                conn.execute(ddl.format(s=tenant.schema_name))
        out["schema"] = time.perf_counter() - started
        started = time.perf_counter()
        with conn.transaction():
            conn.execute(ddl.format(s=SHARED_SCHEMA))
        out["rls"] = time.perf_counter() - started
    return out


def catalog(made: dict[str, list[Any]]) -> dict[str, dict[str, float]]:
    from tenants.database_roles import owner_connection
    from tenants.placement import SHARED_SCHEMA

    schemas = {"schema": [t.schema_name for t, _k, _m in made["schema"]], "rls": [SHARED_SCHEMA]}
    out = {}
    with owner_connection() as conn:
        for mode, names in schemas.items():
            row = conn.execute(
                "SELECT count(*), coalesce(sum(pg_total_relation_size(c.oid)) FILTER (WHERE c.relkind IN ('r','m')), 0)"
                " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = ANY(%s)",
                (names,),
            ).fetchone()
            assert row is not None
            out[mode] = {"pg_class rows": float(row[0]), "MB": float(row[1]) / 1e6}
        total = conn.execute(
            "SELECT count(*), pg_database_size(current_database()) FROM pg_class"
        ).fetchone()
        assert total is not None
        out["database"] = {"pg_class rows": float(total[0]), "MB": float(total[1]) / 1e6}
    return out


def report(
    args: argparse.Namespace, made: dict[str, list[Any]], times: dict, migration: dict, sizes: dict
) -> str:
    lines = [
        f"Placement benchmark: {args.tenants} tenants x {args.tasks} tasks in each mode, "
        f"{args.requests} requests per operation and mode, in-process Django+DRF+SQLAlchemy stack (ms)",
        f"1-min load average now: {os.getloadavg()[0]:.2f}",
        "",
        f"{'operation':<22} {'schema p50':>10} {'schema p99':>10} {'rls p50':>10} {'rls p99':>10} {'rls/schema p50':>15}",
        "-" * 82,
    ]
    worst = 0.0
    for name, modes in times.items():
        s50, s99 = p(modes["schema"], 0.5), p(modes["schema"], 0.99)
        r50, r99 = p(modes["rls"], 0.5), p(modes["rls"], 0.99)
        worst = max(worst, r50 / s50 - 1)
        lines.append(
            f"{name:<22} {s50:>10.2f} {s99:>10.2f} {r50:>10.2f} {r99:>10.2f} {r50 / s50:>14.2f}x"
        )
    onboard = {m: [ms for _t, _k, ms in made[m]] for m in made}
    lines += [
        "-" * 82,
        f"{'onboarding (clone path)':<22} {statistics.median(onboard['schema']):>10.1f} {p(onboard['schema'], 0.99):>10.1f}"
        f" {statistics.median(onboard['rls']):>10.1f} {p(onboard['rls'], 0.99):>10.1f}",
        f"one migration's DDL on every placement: schema mode {migration['schema']:.2f} s "
        f"({args.tenants} schemas), rls mode {migration['rls']:.2f} s (one table of {args.tenants * args.tasks:,} rows)",
        f"catalog: schema mode {sizes['schema']['pg_class rows']:.0f} pg_class rows, {sizes['schema']['MB']:.0f} MB;"
        f" rls mode {sizes['rls']['pg_class rows']:.0f} pg_class rows, {sizes['rls']['MB']:.0f} MB;"
        f" whole database {sizes['database']['pg_class rows']:.0f} rows, {sizes['database']['MB']:.0f} MB",
        "",
        f"worst RLS overhead at p50: {worst * 100:+.1f}%   target <= {TARGET_OVERHEAD * 100:.0f}%   "
        + ("PASS" if worst <= TARGET_OVERHEAD else "MISS"),
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100)
    parser.add_argument("--tasks", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    os.chdir(ROOT)
    try:
        print(f"creating {DB} and {args.tenants} tenants per mode ...", file=sys.stderr)
        env = setup_database()
        os.environ.update(env)
        os.environ["DEBUG"] = "false"
        import django

        django.setup()
        made = onboard_all(args.tenants)
        print(f"loading {args.tasks} tasks per tenant ...", file=sys.stderr)
        load_tasks(made, args.tasks)
        print("measuring ...", file=sys.stderr)
        times = measure_api(made, args.tasks, args.requests)
        policy_times = measure_tenant_policies(made, args.tasks, args.requests)
        migration = migration_time(made)
        sizes = catalog(made)
        from django.db import connections

        connections.close_all()
        print(report(args, made, times, migration, sizes))
        print(policies_report(policy_times))
    finally:
        if not args.keep:
            drop_database(DB)


if __name__ == "__main__":
    main()

"""Schema-per-tenant against the shared RLS schema, on the same workload, side by side.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with superuser `postgres`, Redis):

    .venv/bin/python -m tests.benchmarks.bench_placement [--tenants 100] [--tasks 10000] [--requests 400]
        [--policy-rounds 6] [--policy-requests 200] [--explain-tenants 8] [--explain-iterations 1000]
        [--only-policies] [--database taskflow_bench_placement] [--keep]

In one throw-away database (`taskflow_bench_placement`) the platform holds `--tenants` tenants in
each mode, each with `--tasks` tasks (loaded with INSERT ... SELECT, history triggers standing
down as they do for a move). Then, alternating between the modes request by request so both see
the same machine load, the full Django + DRF + SQLAlchemy stack answers (in-process test client,
bearer token, tenant resolution from the Redis cache): the first page of tasks, a deep page
(cursor at row tasks-100), a get by id, and a patch with If-Match. Also: onboarding time (the
clone path, no spare schema ready), the time to apply one migration's DDL (a nullable column and
an index) to every tenant's tasks table, and the catalog each mode costs. Target: RLS API
overhead <= 10% at p50 over schema mode. Then the cost of row-level security in schema mode
itself (tests.benchmarks.policy_overhead): half of the schema-mode tenants have their policies
switched off, the same operations alternate between the halves request by request, in rounds
that swap the halves; then the statements those operations send are replayed under EXPLAIN
(ANALYZE, BUFFERS) for both halves. Target: <= 2% at p50 (median of the rounds).
`--only-policies` onboards schema-mode tenants only and measures just that. Not collected by
pytest.
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
from tests.benchmarks.policy_overhead import (
    TARGET_POLICY_OVERHEAD,
    measure_rounds,
    measure_server,
    operation_statements,
    rounds_report,
    server_report,
)

DB = "taskflow_bench_placement"
TARGET_OVERHEAD = 0.10


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def setup_database(db: str) -> dict[str, str]:
    import subprocess

    create_database(db)
    env = bench_env(db, "control_plane.settings")
    subprocess.run(
        [sys.executable, "manage.py", "setup_platform"],
        cwd=ROOT,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    return env


def onboard_all(count: int, modes: tuple[str, ...] = ("schema", "rls")) -> dict[str, list[Any]]:
    """`count` tenants per mode through the onboarding service; returns tenants, tokens, times."""
    from django.conf import settings

    from control_plane.tenancy.onboarding import (
        provision_onboarding,
        request_onboarding,
        validate_onboarding,
    )

    settings.SPARE_SCHEMAS = 0
    made: dict[str, list[Any]] = {mode: [] for mode in modes}
    for i in range(count):
        for mode in modes:
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


def one_of_each(client: Any, cursor: str, task_id: int, etag: str) -> dict[str, Callable[[], Any]]:
    """The measured operations on one task, as calls (the patch writes once: If-Match `etag`)."""
    return {
        "first page": lambda: client.get("/api/v1/tasks", {"limit": 50}),
        "deep page": lambda: client.get("/api/v1/tasks", {"limit": "50", "cursor": cursor}),
        "get by id": lambda: client.get(f"/api/v1/tasks/{task_id}"),
        "patch with version": lambda: client.patch(
            f"/api/v1/tasks/{task_id}",
            {"priority": 3},
            content_type="application/json",
            headers={"If-Match": etag},
        ),
    }


def capture_policy_statements(
    tenants: list[Any], per_tenant: int
) -> dict[str, dict[str, list[tuple[str, Any]]]]:
    """The SQL each operation sends for each of `tenants` (policy_overhead replays it)."""
    from django.test import Client

    from tenants.database_roles import owner_connection

    captured = {}
    for tenant, token, _ms in tenants:
        client = Client(
            HTTP_HOST=f"{tenant.slug}.bench.localhost",
            headers={"Authorization": f"Bearer {token}"},
        )
        cursor = deep_cursor(tenant, tenant.schema_name, per_tenant)
        task_id = client.get("/api/v1/tasks", {"limit": 1}).json()["results"][0]["id"]
        current = client.get(f"/api/v1/tasks/{task_id}")
        operations = one_of_each(client, cursor, task_id, current["ETag"])
        captured[tenant.slug] = operation_statements(operations, tenant)
        # The replayed UPDATE names the version it read: put that version back (no history).
        with owner_connection() as conn, conn.transaction():
            conn.execute("SELECT set_config('app.tenant_id', %s, true)", (str(tenant.pk),))
            conn.execute("SELECT set_config('app.copying_tenant', 'on', true)")
            conn.execute(
                f'UPDATE "{tenant.schema_name}".tasks SET version = version - 1 WHERE id = %s',
                (task_id,),
            )
    return captured


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
    parser.add_argument("--policy-rounds", type=int, default=6)
    parser.add_argument("--policy-requests", type=int, default=200)
    parser.add_argument("--explain-tenants", type=int, default=8)
    parser.add_argument("--explain-iterations", type=int, default=1000)
    parser.add_argument("--only-policies", action="store_true", help="schema-mode tenants only")
    parser.add_argument("--database", default=DB)
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    os.chdir(ROOT)
    try:
        print(f"creating {args.database} and {args.tenants} tenants per mode ...", file=sys.stderr)
        env = setup_database(args.database)
        os.environ.update(env)
        os.environ["DEBUG"] = "false"
        import django

        django.setup()
        made = onboard_all(args.tenants, ("schema",) if args.only_policies else ("schema", "rls"))
        print(f"loading {args.tasks} tasks per tenant ...", file=sys.stderr)
        load_tasks(made, args.tasks)
        print("measuring ...", file=sys.stderr)
        if not args.only_policies:
            times = measure_api(made, args.tasks, args.requests)
            migration = migration_time(made)
            sizes = catalog(made)
            print(report(args, made, times, migration, sizes))
        rounds = measure_rounds(
            made["schema"], args.tasks, args.policy_requests, args.policy_rounds, measure_api
        )
        table, worst = rounds_report(rounds)
        print(table)
        sample = made["schema"][: args.explain_tenants]
        captured = capture_policy_statements(sample, args.tasks)
        print(server_report(measure_server(captured, sample, args.explain_iterations),
                            args.explain_iterations))  # fmt: skip
        print(
            f"1-min load average now: {os.getloadavg()[0]:.2f}\n"
            f"worst policy overhead at p50 (median of rounds): {worst * 100:+.1f}%"
            f"   target <= {TARGET_POLICY_OVERHEAD * 100:.0f}%   "
            + ("PASS" if worst <= TARGET_POLICY_OVERHEAD else "MISS")
        )
        from django.db import connections

        connections.close_all()
    finally:
        if not args.keep:
            drop_database(args.database)


if __name__ == "__main__":
    main()

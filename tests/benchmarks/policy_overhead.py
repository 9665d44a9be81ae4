"""The cost of the forced row-level security policies in tenant schemas (bench_placement's second
part): schema-mode tenants with their policies against the same tenants without them.

Two measures, because the machine these run on is shared and loaded:

- request time through the whole stack, in rounds; within a round requests alternate between the
  two groups one by one, and from one round to the next the groups swap which half has its
  policies switched off, so neither tenants nor data favour a side. Each round gives one p50
  overhead per operation; the report gives their median and spread (min, max).
- the server's own work for the same SQL: the statements each operation sent are captured and
  replayed under `EXPLAIN (ANALYZE, BUFFERS)` as the app role, alternating groups statement set
  by statement set. Buffers touched do not depend on machine load; planning + execution time
  does far less than a request's Python does.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

TARGET_POLICY_OVERHEAD = 0.02

# A measure_api(groups, per_tenant, requests) -> {operation: {group: [ms, ...]}}.
Measure = Callable[[dict[str, list[Any]], int, int], dict[str, dict[str, list[float]]]]


def p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def set_policies(tenants: list[Any], *, on: bool) -> None:
    """ENABLE + FORCE (on) or NO FORCE + DISABLE (off) row-level security on every table of the
    tenants' schemas that has policies; the policies themselves stay."""
    from psycopg import sql

    from tenants.database_roles import owner_connection

    change = (
        "ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY"
        if on
        else "NO FORCE ROW LEVEL SECURITY, DISABLE ROW LEVEL SECURITY"
    )
    with owner_connection(autocommit=True) as conn:
        for tenant, _token, _ms in tenants:
            tables = conn.execute(
                "SELECT DISTINCT c.relname FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid"
                " WHERE c.relnamespace = %s::regnamespace",
                (tenant.schema_name,),
            ).fetchall()
            assert tables, f"{tenant.schema_name} has no policies to measure"
            for (table,) in tables:
                conn.execute(
                    sql.SQL("ALTER TABLE {} " + change).format(
                        sql.Identifier(tenant.schema_name, table)
                    )
                )


def halves(tenants: list[Any], round_: int) -> tuple[list[Any], list[Any]]:
    """(with policies, without) for a round: the halves swap sides every round."""
    even, odd = tenants[::2], tenants[1::2]
    return (even, odd) if round_ % 2 == 0 else (odd, even)


def measure_rounds(
    tenants: list[Any], per_tenant: int, requests: int, rounds: int, measure_api: Measure
) -> list[dict[str, dict[str, list[float]]]]:
    """`rounds` interleaved A/B measurements of the API, policies on one half, off the other."""
    results = []
    try:
        for round_ in range(rounds):
            guarded, bare = halves(tenants, round_)
            set_policies(guarded, on=True)
            set_policies(bare, on=False)
            results.append(measure_api({"policies": guarded, "none": bare}, per_tenant, requests))
    finally:
        set_policies(tenants, on=True)
    return results


def rounds_report(results: list[dict[str, dict[str, list[float]]]]) -> tuple[str, float]:
    """The table of per-round p50 overheads; returns it and the worst operation's median."""
    lines = [
        "",
        f"Schema mode: tenant schemas with forced RLS policies vs the same without, {len(results)}"
        " rounds, halves swapped every round (request ms through the whole stack)",
        f"{'operation':<20} {'with p50':>9} {'none p50':>9} {'overhead p50: median':>21}"
        f" {'min':>7} {'max':>7} {'with p99':>9} {'none p99':>9}",
        "-" * 98,
    ]
    worst = -1.0
    for name in results[0]:
        overheads = [p(r[name]["policies"], 0.5) / p(r[name]["none"], 0.5) - 1 for r in results]
        pooled = {g: [ms for r in results for ms in r[name][g]] for g in ("policies", "none")}
        median = statistics.median(overheads)
        worst = max(worst, median)
        lines.append(
            f"{name:<20} {p(pooled['policies'], 0.5):>9.2f} {p(pooled['none'], 0.5):>9.2f}"
            f" {median * 100:>+20.1f}% {min(overheads) * 100:>+6.1f}% {max(overheads) * 100:>+6.1f}%"
            f" {p(pooled['policies'], 0.99):>9.2f} {p(pooled['none'], 0.99):>9.2f}"
        )
    lines.append("-" * 98)
    return "\n".join(lines), worst


# --- The server's work for the same statements -------------------------------------------------


@contextmanager
def captured_statements(schema: str) -> Iterator[list[tuple[str, Any]]]:
    """The TaskFlow engine's statements that name `schema`, as sent, while the block runs."""
    from sqlalchemy import event

    from tenants.binding import engine

    seen: list[tuple[str, Any]] = []

    def record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if schema in statement:
            seen.append((statement, parameters))

    event.listen(engine(), "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine(), "before_cursor_execute", record)


def operation_statements(
    operations: dict[str, Callable[[], Any]], tenant: Any
) -> dict[str, list[tuple[str, Any]]]:
    """Each operation run once for `tenant`, and the statements it sent."""
    out = {}
    for name, run in operations.items():
        with captured_statements(tenant.schema_name) as seen:
            response = run()
            assert response.status_code == 200, response.content
        assert seen, f"{name} sent no statement naming {tenant.schema_name}"
        out[name] = list(seen)
    return out


def explain_statements(
    conn: Any, tenant: Any, statements: list[tuple[str, Any]]
) -> tuple[float, int]:
    """Planning + execution ms and shared buffers of `statements` in one transaction bound to
    the tenant as a request's is; rolled back (a patch's UPDATE changes nothing)."""
    from tenants.binding import BIND_TRANSACTION

    total_ms, buffers = 0.0, 0
    with conn.transaction(force_rollback=True):
        conn.execute(BIND_TRANSACTION, (str(tenant.pk), "", "bench-explain"))
        for statement, parameters in statements:
            ((plan,),) = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + statement, parameters
            ).fetchall()
            top = plan[0]
            total_ms += top["Planning Time"] + top["Execution Time"]
            buffers += top["Plan"]["Shared Hit Blocks"] + top["Plan"]["Shared Read Blocks"]
    return total_ms, buffers


def measure_server(
    captured: dict[str, dict[str, list[tuple[str, Any]]]], tenants: list[Any], iterations: int
) -> dict[str, dict[str, tuple[list[float], list[int]]]]:
    """`iterations` replays of every operation's statements (`captured[slug][operation]`) per
    group, alternating the groups' order, in two phases with the halves swapped."""
    import psycopg
    from django.conf import settings

    from tenants.binding import sqlalchemy_url

    url = sqlalchemy_url(settings.DATABASE_URL).replace("postgresql+psycopg://", "postgresql://")
    operations = list(next(iter(captured.values())))
    out: dict[str, dict[str, tuple[list[float], list[int]]]] = {
        op: {g: ([], []) for g in ("policies", "none")} for op in operations
    }
    try:
        with psycopg.connect(url, cursor_factory=psycopg.ClientCursor) as conn:
            for phase in (0, 1):
                guarded, bare = halves(tenants, phase)
                set_policies(guarded, on=True)
                set_policies(bare, on=False)
                groups = {"policies": guarded, "none": bare}
                for i in range(iterations // 2 + 10):
                    for group in ("policies", "none") if i % 2 else ("none", "policies"):
                        tenant = groups[group][i % len(groups[group])][0]
                        for op in operations:
                            ms, buffers = explain_statements(
                                conn, tenant, captured[tenant.slug][op]
                            )
                            if i >= 10:  # the first ones warm caches
                                out[op][group][0].append(ms)
                                out[op][group][1].append(buffers)
    finally:
        set_policies(tenants, on=True)
    return out


def server_report(
    times: dict[str, dict[str, tuple[list[float], list[int]]]], iterations: int
) -> str:
    lines = [
        "",
        f"The same statements on the server: EXPLAIN (ANALYZE, BUFFERS) as the app role, {iterations}"
        " replays per group alternating (planning + execution ms per operation; shared buffers)",
        f"{'operation':<20} {'with p50':>9} {'none p50':>9} {'overhead p50':>13} {'sum ratio':>10}"
        f" {'buffers with':>13} {'buffers none':>13}",
        "-" * 93,
    ]
    for name, groups in times.items():
        (w, wb), (n, nb) = groups["policies"], groups["none"]
        lines.append(
            f"{name:<20} {p(w, 0.5):>9.3f} {p(n, 0.5):>9.3f} {(p(w, 0.5) / p(n, 0.5) - 1) * 100:>+12.1f}%"
            f" {sum(w) / sum(n):>9.3f}x {statistics.median(wb):>13.0f} {statistics.median(nb):>13.0f}"
        )
    lines.append("-" * 93)
    return "\n".join(lines)

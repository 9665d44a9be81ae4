"""Moving a tenant between placements: its own schema <-> the shared RLS schema.

Rows (history included) stream with COPY from the source into a staging table and from there
into the target, in one transaction that holds the tenant's write lock exclusively: reads go
on from the source throughout; writes wait (at most TENANT_WRITE_LOCK_TIMEOUT_MS, then 503).
The rows read from the source, staged and written to the target must agree in number, and
counts and checksums of every table in both placements are compared with them before the routing
switch commits in that same transaction (on any engine: a placement that does not see the
tenant's rows must not pass for an empty tenant). Only then is the source removed, after checking under the lock again that
nothing reached it in between. A failure at any step before the switch leaves the tenant
served from the source with nothing lost. Ids come from the tenant's own sequence, whatever its
placement (tenants.ids), so rows keep their ids, history its references, and later creates go on
after the last id with nothing to re-seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import psycopg
from django.conf import settings
from psycopg import sql
from psycopg.types.json import Jsonb

from tenants.binding import WRITE_LOCK_SPACE
from tenants.citus import is_citus
from tenants.cloning import TEMPLATE_SCHEMA, clone_schema, read_revisions
from tenants.database_roles import app_role_name, owner_connection
from tenants.local_settings import bind_tenant
from tenants.models import Isolation, Tenant, TenantStatus
from tenants.placement import SHARED_SCHEMA
from tenants.problems import Problem
from tenants.provisioning import delete_shared_rows, drop_schema
from tenants.resolution import forget_tenant
from tenants.row_security import node_move_lock, restore_forced_row_security, unforced_for_copy


class MoveRefused(Problem):
    status = 409
    title = "Move refused"


@dataclass
class MoveReport:
    tenant: str
    source: str
    target: str
    rows: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    source_removed: bool = False


def placement(tenant: Tenant, isolation: str | None = None) -> str:
    mode = isolation or tenant.isolation
    return tenant.schema_name if mode == Isolation.SCHEMA else SHARED_SCHEMA


def move_refusal(tenant: Tenant, to: str) -> str | None:
    """Why `tenant` cannot move to `to` as it stands, or None: asked before a move is queued too."""
    if to not in Isolation.values:
        return f"Unknown isolation {to!r}."
    if to == tenant.isolation:
        return f"Tenant {tenant.slug!r} is already in {to} mode."
    if tenant.status not in {TenantStatus.ACTIVE, TenantStatus.SUSPENDED}:
        return f"Tenant {tenant.slug!r} is {tenant.status}; only provisioned tenants move."
    return None


def move_tenant(tenant: Tenant, to: str) -> MoveReport:
    """Move `tenant` to isolation mode `to` (schema or rls); see the module docstring."""
    refusal = move_refusal(tenant, to)
    if refusal is not None:
        raise MoveRefused(refusal)
    source, target = placement(tenant), placement(tenant, to)
    started = time.perf_counter()
    report = MoveReport(tenant.slug, source, target)
    made_target = False
    # Autocommit connections: every transaction below is an explicit one, so nothing holds a
    # lock past its step (the cleanup's DROP SCHEMA must not wait on our own reads).
    with owner_connection(autocommit=True) as dst, owner_connection(autocommit=True) as src:
        if to == Isolation.SCHEMA:
            clone_schema(
                dst, target, source=TEMPLATE_SCHEMA, grant_to=app_role_name(), replace_existing=True
            )
            made_target = True
        try:
            revisions = _matching_revisions(dst, source, target)
            with dst.transaction():
                _lock_writers_out(dst, tenant.pk)
                tables = ordered_tables(dst, source)
                for table in tables:
                    report.rows[table] = _copy_table(src, dst, tenant.pk, source, target, table)
                _verify(dst, tenant.pk, source, target, report.rows)
                dst.execute(
                    sql.SQL(
                        "UPDATE {} SET isolation = %s, revisions = %s, updated_at = now() WHERE id = %s"
                    ).format(sql.Identifier(Tenant._meta.db_table)),
                    (to, Jsonb(revisions), tenant.pk),
                )
        except BaseException:
            if made_target:
                drop_schema(dst, target)
            raise
    forget_tenant(tenant)
    tenant.refresh_from_db()
    report.source_removed = _remove_source(tenant.pk, source, report.rows)
    report.seconds = round(time.perf_counter() - started, 3)
    return report


def _matching_revisions(conn: psycopg.Connection, source: str, target: str) -> dict[str, str]:
    source_alembic = read_revisions(conn, source).get("alembic")
    target_revisions = read_revisions(conn, target)
    if source_alembic != target_revisions.get("alembic"):
        raise MoveRefused(
            f"{source} is at revision {source_alembic} and {target} at {target_revisions.get('alembic')};"
            " migrate both to the same revision first."
        )
    return target_revisions


def _lock_writers_out(conn: psycopg.Connection, tenant_id: int) -> None:
    """Exclusive tenant write lock for this transaction; waits for in-flight writes to finish."""
    conn.execute(
        "SELECT set_config('lock_timeout', %s, true)",
        (f"{settings.TENANT_MOVE_LOCK_TIMEOUT_MS}ms",),
    )
    conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (WRITE_LOCK_SPACE, tenant_id))
    conn.execute("SELECT set_config('lock_timeout', '0', true)")
    # Row-level security is forced on the shared schema, for the owner too; history triggers
    # stand down so copied history is not written twice.
    conn.execute(bind_tenant(tenant_id, copying=True))


def ordered_tables(conn: psycopg.Connection, schema: str) -> list[str]:
    """Tables with a tenant_id column, parents before children (foreign keys inside `schema`)."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' AND NOT a.attisdropped"
            " WHERE n.nspname = %s AND c.relkind = 'r' ORDER BY c.relname",
            (schema,),
        )
    ]
    parents: dict[str, set[str]] = {t: set() for t in tables}
    for child, parent in conn.execute(
        "SELECT c.relname, p.relname FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid"
        " JOIN pg_class p ON p.oid = con.confrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = %s AND con.contype = 'f'",
        (schema,),
    ):
        if child in parents and parent in parents and parent != child:
            parents[child].add(parent)
    ordered: list[str] = []
    while parents:
        ready = sorted(t for t, deps in parents.items() if deps <= set(ordered))
        if not ready:
            raise MoveRefused(f"Foreign keys in {schema} form a cycle: {sorted(parents)}")
        ordered.extend(ready)
        for table in ready:
            del parents[table]
    return ordered


def _columns(conn: psycopg.Connection, schema: str, table: str) -> list[str]:
    return [
        r[0]
        for r in conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = format('%%I.%%I', %s::text, %s::text)::regclass"
            " AND attnum > 0 AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
            (schema, table),
        )
    ]


def _copy_table(
    src: psycopg.Connection,
    dst: psycopg.Connection,
    tenant_id: int,
    source: str,
    target: str,
    table: str,
) -> int:
    """Stream one table's rows of the tenant with COPY into a staging table, then into target."""
    target_columns = _columns(dst, target, table)
    columns = [c for c in _columns(dst, source, table) if c in target_columns]
    column_list = sql.SQL(", ").join(map(sql.Identifier, columns))
    stage = sql.Identifier(f"move_{table}")
    dst.execute(
        sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS SELECT {} FROM {}.{} WITH NO DATA").format(
            stage, column_list, sql.Identifier(target), sql.Identifier(table)
        )
    )
    select = sql.SQL(
        "COPY (SELECT {} FROM {}.{} WHERE tenant_id = {}) TO STDOUT (FORMAT binary)"
    ).format(column_list, sql.Identifier(source), sql.Identifier(table), sql.Literal(tenant_id))
    with src.transaction():
        src.execute(bind_tenant(tenant_id))
        reader, writer = src.cursor(), dst.cursor()
        with (
            reader.copy(select) as out,
            writer.copy(sql.SQL("COPY {} FROM STDIN (FORMAT binary)").format(stage)) as into,
        ):
            for block in out:
                into.write(block)
    # INSERT ... SELECT, not COPY, into the target: Citus refuses COPY into a table with
    # row-level security, and the staging table is local to this session either way. ON
    # CONFLICT makes Citus insert from intermediate results on each shard where it would
    # otherwise COPY into them (and a row that conflicted is one not written: counted below).
    inserted = dst.execute(
        sql.SQL("INSERT INTO {}.{} ({}) SELECT {} FROM {} ON CONFLICT DO NOTHING").format(
            sql.Identifier(target), sql.Identifier(table), column_list, column_list, stage
        )
    ).rowcount
    counts = {"read": reader.rowcount, "staged": writer.rowcount, "written": inserted}
    if len(set(counts.values())) != 1:
        raise MoveRefused(
            f"{table}: rows {counts} between {source} and {target}; nothing was switched."
        )
    return inserted


def _fingerprint(
    conn: psycopg.Connection, tenant_id: int, schema: str, table: str, columns: list[str]
) -> tuple[int, int]:
    """(rows, order-independent checksum of their text) of the tenant's rows in one table."""
    row = conn.execute(
        sql.SQL(
            "SELECT count(*), coalesce(sum(hashtextextended(t::text, 0)), 0)"
            " FROM (SELECT {} FROM {}.{} WHERE tenant_id = %s) t"
        ).format(
            sql.SQL(", ").join(map(sql.Identifier, columns)),
            sql.Identifier(schema),
            sql.Identifier(table),
        ),
        (tenant_id,),
    ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _verify(
    conn: psycopg.Connection,
    tenant_id: int,
    source: str,
    target: str,
    copied: dict[str, int],
) -> None:
    """Refuse the switch unless, for every table, the rows the copy moved, the source's rows and
    the target's rows agree in count and checksum, all read under the move's lock."""
    for table, rows in copied.items():
        target_columns = _columns(conn, target, table)
        columns = [c for c in _columns(conn, source, table) if c in target_columns]
        before = _fingerprint(conn, tenant_id, source, table, columns)
        after = _fingerprint(conn, tenant_id, target, table, columns)
        if before != after or before[0] != rows:
            raise MoveRefused(
                f"{table}: {before[0]} rows in {source}, {rows} copied, {after[0]} in {target}"
                f" (checksums {before[1]} and {after[1]}); nothing was switched."
            )


def _remove_source(tenant_id: int, source: str, copied: dict[str, int]) -> bool:
    """Drop the source once the switch is committed, unless a write reached it in between."""
    with owner_connection() as conn, conn.transaction():
        _lock_writers_out(conn, tenant_id)
        for table, rows in copied.items():
            count = conn.execute(
                sql.SQL("SELECT count(*) FROM {}.{} WHERE tenant_id = %s").format(
                    sql.Identifier(source), sql.Identifier(table)
                ),
                (tenant_id,),
            ).fetchone()
            if count is None or count[0] != rows:
                return False
        if source == SHARED_SCHEMA:
            delete_shared_rows(conn, tenant_id)
        else:
            drop_schema(conn, source)
    return True


# --- Between the nodes of a Citus cluster (schema tenants only) --------------------------------

SCHEMA_NODE = """
SELECT n.nodeid, n.nodename, n.nodeport
FROM pg_dist_schema s
JOIN pg_dist_partition p ON p.colocationid = s.colocationid
JOIN pg_dist_shard sh ON sh.logicalrelid = p.logicalrelid
JOIN pg_dist_placement pl ON pl.shardid = sh.shardid
JOIN pg_dist_node n ON n.groupid = pl.groupid
WHERE s.schemaid = %s::regnamespace
LIMIT 1
"""


@dataclass
class NodeMoveReport:
    tenant: str
    schema: str
    source: str  # host:port
    target: str
    seconds: float = 0.0
    rows: dict[str, int] = field(default_factory=dict)


def schema_node(conn: psycopg.Connection, schema: str) -> tuple[int, str, int] | None:
    """(node id, host, port) of the node holding a distributed schema; None when it is not
    distributed (or the database is no Citus coordinator)."""
    if not is_citus(conn):
        return None
    row = conn.execute(SCHEMA_NODE, (schema,)).fetchone()
    return (int(row[0]), str(row[1]), int(row[2])) if row else None


def _fingerprints(conn: psycopg.Connection, tenant: Tenant) -> dict[str, tuple[int, int]]:
    """(rows, checksum) of each of the tenant's tables in its schema, read in one transaction
    with the tenant bound (row-level security is forced on the owner too)."""
    schema = tenant.schema_name
    with conn.transaction():
        conn.execute(bind_tenant(tenant.pk))
        return {
            table: _fingerprint(conn, tenant.pk, schema, table, _columns(conn, schema, table))
            for table in ordered_tables(conn, schema)
        }


def _row_counts(conn: psycopg.Connection, schema: str, tables: list[str]) -> dict[str, int]:
    """Rows of each of `tables` as `conn` sees them, in one statement."""
    if not tables:
        return {}
    counts = sql.SQL(", ").join(
        sql.SQL("(SELECT count(*) FROM {})").format(sql.Identifier(schema, table))
        for table in tables
    )
    row = conn.execute(sql.SQL("SELECT ") + counts).fetchone()
    assert row is not None
    return dict(zip(tables, (int(count) for count in row), strict=True))


def move_tenant_to_node(tenant: Tenant, host: str, port: int) -> NodeMoveReport:
    """Move a schema tenant's distributed schema to another node with `citus_schema_move`,
    holding the tenant's write lock exclusively: writes wait (then 503), reads go on.

    citus_schema_move copies the shards as the tables' owner, whom the forced row-level
    security shows no row: the target would arrive empty and the source be dropped. So for the
    copy, and only while the write lock keeps every writer out, the schema's tables do not force
    row-level security on their owner (the app role is filtered as always); forcing comes back
    whatever happens, and if this process dies in between, the next move (or beat) forces it
    again (tenants.row_security). Nothing but the copy and one count runs in that window: the
    rows and checksums of every table are read with the tenant bound before it; inside it the
    owner's count of each table (what the copy will see, every row there is) must equal them
    (the tenant's rows are a subset of those, so equal counts are the same rows); after it the
    target must hold the same rows and checksums, or the move is reported failed.
    """
    if tenant.isolation != Isolation.SCHEMA:
        raise MoveRefused(
            f"Tenant {tenant.slug!r} is in {tenant.isolation} mode; only schemas move."
        )
    started = time.perf_counter()
    # Two connections: `locker` holds the write lock (an advisory lock on the coordinator, no
    # table locks) in a transaction that spans the move; `mover` commits each step, since the
    # shard copy runs on connections of its own, which must see forcing turned off and must not
    # wait for a lock this process holds.
    with owner_connection() as locker, owner_connection(autocommit=True) as mover:
        # A node move killed while its schema did not force row-level security left it so.
        restore_forced_row_security(mover)
        where = schema_node(mover, tenant.schema_name)
        if where is None:
            raise MoveRefused(
                f"{tenant.schema_name} is not a distributed schema on a Citus cluster."
            )
        _node_id, source_host, source_port = where
        if (source_host, source_port) == (host, port):
            raise MoveRefused(f"{tenant.schema_name} is already on {host}:{port}.")
        with node_move_lock(mover, tenant.schema_name), locker.transaction():
            _lock_writers_out(locker, tenant.pk)
            before = _fingerprints(mover, tenant)
            counts = {table: count for table, (count, _checksum) in before.items()}
            with unforced_for_copy(mover, tenant.schema_name):
                seen = _row_counts(mover, tenant.schema_name, list(before))
                if seen != counts:
                    raise MoveRefused(
                        f"{tenant.schema_name}: the copy would see {seen}, the tenant has"
                        f" {counts}; nothing was moved."
                    )
                mover.execute(
                    "SELECT citus_schema_move(%s::regnamespace, %s, %s, 'block_writes')",
                    (tenant.schema_name, host, port),
                )
            after = _fingerprints(mover, tenant)
            moved_to = schema_node(mover, tenant.schema_name)
            if after != before or moved_to is None or moved_to[1:] != (host, port):
                raise MoveRefused(
                    f"{tenant.schema_name}: {before} before the move, {after} on"
                    f" {moved_to[1:] if moved_to else None} after it."
                )
    return NodeMoveReport(
        tenant.slug,
        tenant.schema_name,
        f"{source_host}:{source_port}",
        f"{host}:{port}",
        round(time.perf_counter() - started, 3),
        rows={table: count for table, (count, _checksum) in before.items()},
    )

"""Clone the template schema into a tenant schema, from DDL generated once per template revision.

The template is kept at the head of the Django tenant apps and the Alembic TaskFlow migrations.
Its DDL is read from the catalog with the template on the search_path, so names come out
unqualified; the script then runs in one transaction, in one round trip, with only the new
schema on the search_path (SET LOCAL, never a session SET). Generating the script scans catalogs
that have no index by schema, so it is cached per template revision.

What it copies: enum and domain types, tables (columns, defaults, identity and generated columns, NOT NULL), sequences
(reset to their start), constraints, indexes, triggers, row-level security with its policies and the
template's own functions, plus the rows of the version-bookkeeping tables (so the clone records the revisions it is at). It must
never copy tenant data: the template has none.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import pq, sql

from tenants.citus import is_citus

TEMPLATE_SCHEMA = "template"
BOOKKEEPING_TABLES = ("django_migrations", "django_content_type", "alembic_version")


@dataclass(frozen=True)
class CloneScript:
    """DDL of a template revision, with `{schema}` where the target schema's name goes."""

    source: str
    fingerprint: str
    revisions: dict[str, str]
    body: str
    tables: tuple[str, ...] = field(default=())
    # The body's statements one by one, without the sequence resets, and the (table, column)
    # pairs whose sequence those reset: a Citus coordinator takes no multi-statement string on a
    # distributed schema, and runs `setval(..., max(id))` on a worker, where it fails.
    statements: tuple[str, ...] = field(default=())
    counters: tuple[tuple[str, str], ...] = field(default=())

    def render(self, target: str) -> str:
        quoted = _quote(target)
        return self.body.replace("{schema}", quoted)


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


_cache: dict[str, CloneScript] = {}  # the last script generated per source schema
_cache_lock = threading.Lock()


STALE_TEMPLATE = "TFSTL"  # SQLSTATE the script raises when the template moved on since generation


def django_digest_sql(schema: str) -> str:
    """A short digest of the Django migrations applied in `schema`, computed by PostgreSQL.

    The one definition of a schema's "django" revision: cloning, Tenant.revisions and the
    migrator's guards (migrations_sqla.migrator) all compare this value.
    """
    return (
        "(SELECT left(encode(sha256(convert_to(coalesce(string_agg(app || '.' || name, ','"
        f" ORDER BY app, name), ''), 'UTF8')), 'hex'), 16) FROM {_quote(schema)}.django_migrations)"
    )


def _alembic_sql(schema: str) -> str:
    return f"(SELECT coalesce(max(version_num), '') FROM {_quote(schema)}.alembic_version)"


# Which bookkeeping tables a schema has is asked on every onboarding (the template's for a spare,
# the shared schema's in rls mode). Alembic's table is the last a schema gets (the Django tenant
# apps are migrated first, the shared schema has only Alembic's) and neither is ever dropped, so
# once it is there the answer is final: kept per process, it costs no round trip.
_final_expressions: dict[str, dict[str, str]] = {}


def _revision_expressions(conn: psycopg.Connection, schema: str) -> dict[str, str]:
    known = _final_expressions.get(schema)
    if known is not None:
        return known
    row = conn.execute(
        "SELECT to_regclass(format('%%I.django_migrations', %(s)s::text)) IS NOT NULL,"
        "       to_regclass(format('%%I.alembic_version', %(s)s::text)) IS NOT NULL",
        {"s": schema},
    ).fetchone()
    assert row is not None
    expressions = {}
    if row[0]:
        expressions["django"] = django_digest_sql(schema)
    if row[1]:
        expressions["alembic"] = _alembic_sql(schema)
    if "alembic" in expressions:
        _final_expressions[schema] = expressions
    return expressions


def read_revisions(conn: psycopg.Connection, source: str = TEMPLATE_SCHEMA) -> dict[str, str]:
    """The revisions a schema is at: a digest of its Django migrations and its Alembic revision."""
    expressions = _revision_expressions(conn, source)
    if not expressions:
        return {}
    row = conn.execute("SELECT " + ", ".join(expressions.values())).fetchone()
    assert row is not None
    return dict(zip(expressions, row, strict=True))


def fingerprint_of(revisions: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(revisions.items()))


def fingerprint_sql(conn: psycopg.Connection, source: str = TEMPLATE_SCHEMA) -> str:
    """SQL that computes fingerprint_of(read_revisions(source)) inside a statement."""
    expressions = _revision_expressions(conn, source)
    parts = [f"'{key}=' || {expr}" for key, expr in sorted(expressions.items())]
    return " || ',' || ".join(parts) or "''"


def clone_script(conn: psycopg.Connection, source: str = TEMPLATE_SCHEMA) -> CloneScript:
    """The script for the template's current revision: generated when the revision is new."""
    revisions = read_revisions(conn, source)
    fingerprint = fingerprint_of(revisions)
    with _cache_lock:
        cached = _cache.get(source)
    if cached is not None and cached.fingerprint == fingerprint:
        return cached
    script = generate_clone_script(conn, source, revisions, fingerprint)
    with _cache_lock:
        _cache[source] = script
    return script


def clone_schema(
    conn: psycopg.Connection,
    target: str,
    *,
    grant_to: str,
    source: str = TEMPLATE_SCHEMA,
    replace_existing: bool = False,
) -> dict[str, str]:
    """Create schema `target` as a copy of `source` in one transaction and one round trip
    (on an autocommit connection; see run_script).

    The last generated script is used without asking the template's revision first: the
    script itself checks it and raises STALE_TEMPLATE if the template has moved on, and then
    it is generated again and re-run. `grant_to` (the app role) gets usage of the schema; its
    tables reach the app role through the owner's default privileges. `replace_existing` drops
    a leftover `target` first (a redelivered provisioning of a tenant that never went live).
    Returns the revisions the new schema is at.
    """
    with _cache_lock:
        script = _cache.get(source)
    citus = is_citus(conn)
    for attempt in range(2):
        if script is None or attempt:
            script = clone_script(conn, source)
        try:
            if citus:
                _run_statements(conn, script, target, grant_to, replace_existing)
            else:
                run_script(conn, _rendered(script, target, grant_to, replace_existing, conn))
            return script.revisions
        except psycopg.Error as exc:
            if exc.sqlstate != STALE_TEMPLATE or attempt:
                raise
    raise AssertionError("unreachable")


def run_script(conn: psycopg.Connection, script: bytes) -> psycopg.Cursor[Any]:
    """Run a multi-statement script all or nothing; the cursor is left on its last result.

    On an idle autocommit connection PostgreSQL runs a multi-statement query as one implicit
    transaction (SET LOCAL included), so there is no BEGIN or COMMIT round trip: the whole
    script is one. Otherwise it runs in a transaction (or a savepoint in the caller's).
    """
    if conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        cursor = conn.execute(script)
    else:
        with conn.transaction():
            cursor = conn.execute(script)
    while cursor.nextset():
        pass
    return cursor


def _run_statements(
    conn: psycopg.Connection,
    script: CloneScript,
    target: str,
    grant_to: str,
    replace_existing: bool,
) -> None:
    """The script one statement per query in one transaction (Citus), sequences reset from
    values read first."""
    quoted = _quote(target)
    with conn.transaction():
        if replace_existing:
            assert target.startswith("t_"), f"refusing to replace non-tenant schema {target!r}"
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(target)))
        for statement in script.statements:
            conn.execute(statement.replace("{schema}", quoted).encode())
        for table, column in script.counters:
            row = conn.execute(
                sql.SQL("SELECT coalesce(max({}), 0) + 1 FROM {}").format(
                    sql.Identifier(column), sql.Identifier(target, table)
                )
            ).fetchone()
            assert row is not None
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, %s), %s, false)",
                (f"{quoted}.{_quote(table)}", column, row[0]),
            )
        conn.execute(
            sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(
                sql.Identifier(target), sql.Identifier(grant_to)
            )
        )


def _rendered(
    script: CloneScript,
    target: str,
    grant_to: str,
    replace_existing: bool,
    conn: psycopg.Connection,
) -> bytes:
    parts = []
    if replace_existing:
        assert target.startswith("t_"), f"refusing to replace non-tenant schema {target!r}"
        parts.append(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE;")
            .format(sql.Identifier(target))
            .as_bytes(conn)
        )
    parts.append(script.render(target).encode())
    grant = sql.SQL("GRANT USAGE ON SCHEMA {} TO {};").format(
        sql.Identifier(target), sql.Identifier(grant_to)
    )
    parts.append(grant.as_bytes(conn))
    return b"\n".join(parts)


# --- Generation from the catalog ---------------------------------------------------------------

COLUMNS = """
SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
       pg_get_expr(d.adbin, d.adrelid), a.attidentity, a.attgenerated,
       CASE WHEN a.attcollation <> t.typcollation THEN quote_ident(co.collname) END
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
JOIN pg_type t ON t.oid = a.atttypid
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
LEFT JOIN pg_collation co ON co.oid = a.attcollation
WHERE n.nspname = %(s)s AND c.relkind = 'r'
ORDER BY c.relname, a.attnum
"""

SEQUENCES = """
SELECT c.relname, format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
       s.seqcache, s.seqcycle, owner_table.relname, owner_col.attname
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
JOIN pg_sequence s ON s.seqrelid = c.oid
LEFT JOIN pg_depend dep ON dep.objid = c.oid AND dep.classid = 'pg_class'::regclass
     AND dep.refclassid = 'pg_class'::regclass AND dep.deptype IN ('a', 'i')
LEFT JOIN pg_class owner_table ON owner_table.oid = dep.refobjid
LEFT JOIN pg_attribute owner_col ON owner_col.attrelid = dep.refobjid AND owner_col.attnum = dep.refobjsubid
WHERE n.nspname = %(s)s AND c.relkind = 'S' AND coalesce(dep.deptype, 'a') <> 'i'
ORDER BY c.relname
"""

CONSTRAINTS = """
SELECT c.relname, con.conname, con.contype, pg_get_constraintdef(con.oid)
FROM pg_constraint con
JOIN pg_class c ON c.oid = con.conrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND c.relkind = 'r' AND con.contype IN ('p', 'u', 'c', 'x', 'f')
  AND NOT (con.contype = 'c' AND con.conislocal IS FALSE)
ORDER BY con.contype = 'f', c.relname, con.conname
"""

INDEXES = """
SELECT pg_get_indexdef(i.indexrelid)
FROM pg_index i
JOIN pg_class ic ON ic.oid = i.indexrelid
JOIN pg_class c ON c.oid = i.indrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND c.relkind = 'r'
  AND NOT EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = i.indexrelid
                  AND con.conrelid = i.indrelid)
ORDER BY ic.relname
"""

TYPES = """
SELECT t.typname, t.typtype,
       (SELECT array_agg(quote_literal(e.enumlabel) ORDER BY e.enumsortorder)
          FROM pg_enum e WHERE e.enumtypid = t.oid),
       format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
       (SELECT array_agg(pg_get_constraintdef(c.oid) ORDER BY c.conname)
          FROM pg_constraint c WHERE c.contypid = t.oid)
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = %(s)s AND t.typtype IN ('e', 'd')
ORDER BY t.typtype = 'd', t.typname
"""

FUNCTIONS = """
SELECT pg_get_functiondef(p.oid)
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(s)s AND p.prokind IN ('f', 'p')
ORDER BY p.proname
"""

# Row-level security: which tables enable and force it, and their policies (pg_policies prints
# each expression as PostgreSQL reads it back, unqualified with the template on the search_path).
ROW_SECURITY = """
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND c.relkind = 'r' AND (c.relrowsecurity OR c.relforcerowsecurity)
ORDER BY c.relname
"""

POLICIES = """
SELECT format('CREATE POLICY %%I ON %%I AS %%s FOR %%s TO %%s', policyname, tablename, permissive, cmd,
              (SELECT string_agg(CASE WHEN r = 'public' THEN 'PUBLIC' ELSE quote_ident(r) END, ', ')
                 FROM unnest(roles) AS r))
       || coalesce(' USING (' || qual || ')', '') || coalesce(' WITH CHECK (' || with_check || ')', '')
FROM pg_policies
WHERE schemaname = %(s)s
ORDER BY tablename, policyname
"""

TRIGGERS = """
SELECT pg_get_triggerdef(t.oid)
FROM pg_trigger t
JOIN pg_class c ON c.oid = t.tgrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = %(s)s AND NOT t.tgisinternal
ORDER BY c.relname, t.tgname
"""


def generate_clone_script(
    conn: psycopg.Connection, source: str, revisions: dict[str, str], fingerprint: str
) -> CloneScript:
    """Read the template's DDL from the catalog with only the template on the search_path."""
    params = {"s": source}
    qualified = re.compile(
        r"(\s(?:ON|ON ONLY|FUNCTION|PROCEDURE)\s)" + re.escape(_quote_if_needed(source)) + r"\."
    )
    with conn.transaction():
        conn.execute(sql.SQL("SET LOCAL search_path = {}").format(sql.Identifier(source)))
        columns = conn.execute(COLUMNS, params).fetchall()
        types = conn.execute(TYPES, params).fetchall()
        sequences = conn.execute(SEQUENCES, params).fetchall()
        constraints = conn.execute(CONSTRAINTS, params).fetchall()
        indexes = [r[0] for r in conn.execute(INDEXES, params).fetchall()]
        functions = [r[0] for r in conn.execute(FUNCTIONS, params).fetchall()]
        triggers = [r[0] for r in conn.execute(TRIGGERS, params).fetchall()]
        row_security = conn.execute(ROW_SECURITY, params).fetchall()
        policies = [r[0] for r in conn.execute(POLICIES, params).fetchall()]

    guard = " OR ".join(
        f"{expr} IS DISTINCT FROM '{revisions[key]}'"
        for key, expr in _revision_expressions_unchecked(source, revisions).items()
    )
    out = [
        f"DO $guard$ BEGIN IF {guard or 'false'} THEN RAISE EXCEPTION 'template {source} moved on'"
        f" USING ERRCODE = '{STALE_TEMPLATE}'; END IF; END $guard$;",
        "CREATE SCHEMA {schema};",
        "SET LOCAL search_path = {schema}, public;",
    ]
    for name, kind, labels, base, notnull, default, checks in types:
        if kind == "e":
            out.append(f"CREATE TYPE {_quote(name)} AS ENUM ({', '.join(labels or [])});")
        else:
            domain = f"CREATE DOMAIN {_quote(name)} AS {base}"
            domain += f" DEFAULT {default}" if default is not None else ""
            domain += " NOT NULL" if notnull else ""
            domain += "".join(f" {check}" for check in checks or [])
            out.append(domain + ";")
    for name, type_, start, inc, minv, maxv, cache, cycle, _t, _c in sequences:
        out.append(
            f"CREATE SEQUENCE {_quote(name)} AS {type_} INCREMENT {inc} MINVALUE {minv} MAXVALUE {maxv}"
            f" START {start} CACHE {cache}{' CYCLE' if cycle else ''};"
        )
    tables: dict[str, list[str]] = {}
    counters: dict[str, list[str]] = {}  # columns fed by a sequence, advanced past copied rows
    for table, col, type_, notnull, default, identity, generated, collation in columns:
        parts = [_quote(col), type_]
        if collation:
            parts.append(f"COLLATE {collation}")
        if generated == "s":
            parts.append(f"GENERATED ALWAYS AS ({default}) STORED")
        elif identity:
            counters.setdefault(table, []).append(col)
            parts.append(
                "GENERATED ALWAYS AS IDENTITY"
                if identity == "a"
                else "GENERATED BY DEFAULT AS IDENTITY"
            )
        elif default is not None:
            parts.append(f"DEFAULT {default}")
            if default.startswith("nextval("):
                counters.setdefault(table, []).append(col)
        if notnull:
            parts.append("NOT NULL")
        tables.setdefault(table, []).append(" ".join(parts))
    for table, cols in tables.items():
        out.append(f"CREATE TABLE {_quote(table)} (\n  " + ",\n  ".join(cols) + "\n);")
    for name, *_rest, owner_table, owner_col in sequences:
        if owner_table:
            out.append(
                f"ALTER SEQUENCE {_quote(name)} OWNED BY {_quote(owner_table)}.{_quote(owner_col)};"
            )
    for table, name, _type, definition in constraints:
        out.append(f"ALTER TABLE {_quote(table)} ADD CONSTRAINT {_quote(name)} {definition};")
    out.extend(qualified.sub(r"\1{schema}.", ddl) + ";" for ddl in indexes)
    out.extend(qualified.sub(r"\1{schema}.", ddl) + ";" for ddl in functions)
    out.extend(qualified.sub(r"\1{schema}.", ddl) + ";" for ddl in triggers)
    for table, enabled, forced in row_security:
        if enabled:
            out.append(f"ALTER TABLE {_quote(table)} ENABLE ROW LEVEL SECURITY;")
        if forced:
            out.append(f"ALTER TABLE {_quote(table)} FORCE ROW LEVEL SECURITY;")
    out.extend(ddl + ";" for ddl in policies)
    resets: list[tuple[str, str]] = []
    for table in BOOKKEEPING_TABLES:
        if table in tables:
            copy_rows = f"INSERT INTO {_quote(table)} OVERRIDING SYSTEM VALUE SELECT * FROM "
            out.append(copy_rows + f"{_quote(source)}.{_quote(table)};")
            resets.extend((table, col) for col in counters.get(table, []))
    return CloneScript(
        source=source,
        fingerprint=fingerprint,
        revisions=revisions,
        body="\n".join(
            out
            + [
                f"SELECT setval(pg_get_serial_sequence('{{schema}}.{_quote(table)}', '{col}'),"
                f" coalesce(max({_quote(col)}), 0) + 1, false) FROM {_quote(table)};"
                for table, col in resets
            ]
        ),
        tables=tuple(tables),
        statements=tuple(statement.rstrip(";") for statement in out),
        counters=tuple(resets),
    )


def _revision_expressions_unchecked(source: str, revisions: dict[str, str]) -> dict[str, str]:
    """The SQL that recomputes each of `revisions` (tables known to exist: they were just read)."""
    makers = {"django": django_digest_sql, "alembic": _alembic_sql}
    return {key: makers[key](source) for key in revisions}


def _quote_if_needed(identifier: str) -> str:
    """How PostgreSQL's ruleutils prints a schema name: quoted only when it must be."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", identifier):
        return identifier
    return _quote(identifier)

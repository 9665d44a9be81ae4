"""Transaction-local `app.*` settings, written as `SET LOCAL` statements.

Row-level security, history triggers and id defaults read `app.tenant_id`, `app.actor_id`,
`app.request_id` and `app.copying_tenant`. They are set with `SET LOCAL`, never with
`set_config(..., true)`: on a Citus cluster (with `citus.propagate_set_commands = 'local'`) a SET
command is sent on to the worker nodes that hold the rows, a `set_config` call is not, and there
the policies would see no tenant (reads return nothing, a purge deletes nothing, a move copies
nothing). On plain PostgreSQL the two are the same thing.

SET takes no bind parameters: values go in as quoted literals (psycopg.sql.Literal), names only
from the fixed list below. Importable anywhere (Alembic revisions too): no Django, no engine.
This module must never build a session-level SET.
"""

from __future__ import annotations

from psycopg import sql

SETTINGS = frozenset({"app.tenant_id", "app.actor_id", "app.request_id", "app.copying_tenant"})


def set_local(values: dict[str, object]) -> sql.Composed:
    """`SET LOCAL name = 'value'; ...` for each pair (None becomes ''); one round trip."""
    statements = []
    for name, value in values.items():
        if name not in SETTINGS:
            raise ValueError(f"not an app setting: {name!r}")
        text = "" if value is None else str(value)
        statements.append(sql.SQL("SET LOCAL {} = {}").format(sql.SQL(name), sql.Literal(text)))
    return sql.SQL("; ").join(statements)


def bind_tenant(tenant_id: int, *, copying: bool = False) -> sql.Composed:
    """The tenant of the transaction (and the owner's history stand-down while copying rows)."""
    values: dict[str, object] = {"app.tenant_id": int(tenant_id)}
    if copying:
        values["app.copying_tenant"] = "on"
    return set_local(values)

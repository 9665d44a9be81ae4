"""Transaction-local `app.*` settings, written as `SET LOCAL` statements.

Row-level security, history triggers and id defaults read `app.tenant_id`, `app.actor_id`,
`app.request_id` and `app.copying_tenant`. They are set with `SET LOCAL`, never with
`set_config(..., true)`: on a Citus cluster (with `citus.propagate_set_commands = 'local'`) a SET
command is sent on to the worker nodes that hold the rows, a `set_config` call is not, and there
the policies would see no tenant (reads return nothing, a purge deletes nothing, a move copies
nothing). On plain PostgreSQL the two are the same thing.

SET takes no bind parameters: values go in as quoted literals (psycopg.sql.Literal), names only
from the fixed list below. On Citus a query holding these SETs must hold nothing else: Citus
sends a SET's whole query string on to the workers, so other statements in the same string
would run there too (on the shards' shell tables: "cannot execute a distributed query from a
query on a shard"); what `set_local` builds is SETs only. Importable anywhere (Alembic revisions too): no Django, no engine.
This module must never build a session-level SET.
"""

from __future__ import annotations

import re

from psycopg import sql

SETTINGS = frozenset({"app.tenant_id", "app.actor_id", "app.request_id", "app.copying_tenant"})


# Values made only of these characters need no escaping inside single quotes (ids, request ids):
# they skip psycopg's quoting, which costs more than the rest of a request's binding.
PLAIN = re.compile(r"^[A-Za-z0-9._:-]*$")


def set_local(values: dict[str, object]) -> sql.SQL | sql.Composed:
    """`SET LOCAL name = 'value'; ...` for each pair (None becomes ''); one round trip."""
    plain: list[str] = []
    quoted: list[sql.Composable] = []
    for name, value in values.items():
        if name not in SETTINGS:
            raise ValueError(f"not an app setting: {name!r}")
        text = "" if value is None else str(value)
        if PLAIN.match(text):
            plain.append(f"SET LOCAL {name} = '{text}'")
        else:
            quoted.append(sql.SQL("SET LOCAL {} = {}").format(sql.SQL(name), sql.Literal(text)))
    statements = [sql.SQL(statement) for statement in plain] if quoted else []
    if not quoted:
        return sql.SQL("; ".join(plain))
    return sql.SQL("; ").join(statements + quoted)


def bind_tenant(tenant_id: int, *, copying: bool = False) -> sql.SQL | sql.Composed:
    """The tenant of the transaction (and the owner's history stand-down while copying rows)."""
    values: dict[str, object] = {"app.tenant_id": int(tenant_id)}
    if copying:
        values["app.copying_tenant"] = "on"
    return set_local(values)

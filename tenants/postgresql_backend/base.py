"""django-tenants' backend without session state: the search_path is transaction-local.

django-tenants' own backend issues a session-level `SET search_path` on Django's connection when
a tenant is selected. Behind PgBouncer in transaction mode that setting stays on the server
connection and the next client of the pool inherits it (issue 17). This wrapper never sends a
session `SET`:

- on the public schema (every request, every worker task: Django's tables live there) it sends
  nothing, and the server's default search_path applies;
- with a tenant schema selected (migrate_schemas, schema_context in commands) every statement runs
  in a transaction that begins with `set_config('search_path', ..., true)`: inside Django's own
  transaction once per transaction (again after a savepoint rollback), and in autocommit mode the
  statement gets a transaction of its own (BEGIN, set_config, the statement, COMMIT).

So whatever server connection a pool hands out, nothing of this connection's schema is left on
it. A statement that cannot run in a transaction (CREATE INDEX CONCURRENTLY, VACUUM) cannot run
with a tenant schema selected: name the schema in the SQL instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from django_tenants.postgresql_backend.base import DatabaseWrapper as TenantsDatabaseWrapper
from django_tenants.utils import get_public_schema_name, quote_schema_name

from tenants.postgresql_backend.introspection import SchemaIntrospection

SET_LOCAL_SEARCH_PATH = "SELECT set_config('search_path', %s, true)"
# The transaction's search_path is not known (a savepoint rollback may have undone ours).
UNKNOWN: tuple[str, ...] = ("?",)


class DatabaseWrapper(TenantsDatabaseWrapper):
    """django-tenants' wrapper whose schema reaches the server only transaction-locally."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # The search_path this connection's open transaction has set (None: the session default).
        self.local_search_path: tuple[str, ...] | None = None
        # A block's own path (introspection), and whether we opened its transaction ourselves.
        self.block_search_path: tuple[str, ...] | None = None
        self.in_block_transaction = False
        super().__init__(*args, **kwargs)
        self.introspection = SchemaIntrospection(self)
        # Outermost of all execute wrappers, so it runs around theirs too.
        self.execute_wrappers.insert(0, self._with_schema)

    def _handle_search_path(self, cursor: Any = None) -> None:
        """django-tenants' session `SET search_path`: never sent (see _with_schema)."""

    def wanted_search_path(self) -> tuple[str, ...] | None:
        """The schemas the selected tenant needs first on the path; None on the public schema."""
        if self.block_search_path is not None:
            return self.block_search_path
        if self.schema_name == get_public_schema_name():
            return None
        return tuple(self._get_cursor_search_paths())

    def _with_schema(
        self, execute: Any, sql: str, params: Any, many: bool, context: dict[str, Any]
    ) -> Any:
        wanted = self.wanted_search_path()
        if wanted is None and self.local_search_path is None:
            return execute(sql, params, many, context)  # public, nothing set: the hot path
        raw_cursor = context["cursor"].cursor
        if self.in_block_transaction or not self.get_autocommit():
            self._set_local(raw_cursor, wanted)
            return execute(sql, params, many, context)
        # Autocommit: a statement of its own is a transaction of its own, so give it one that
        # carries the path; psycopg's block (BEGIN ... COMMIT, ROLLBACK on error) leaves
        # Django's view of the connection (autocommit) as it was.
        try:
            with self.connection.transaction():
                self._set_local(raw_cursor, wanted)
                return execute(sql, params, many, context)
        finally:
            self.local_search_path = None

    @contextmanager
    def search_path_for_block(self, schemas: tuple[str, ...]) -> Iterator[None]:
        """The block's statements see exactly `schemas`, in one transaction (Django's, or one
        opened here in autocommit mode); afterwards the next statement sets the path it needs."""
        saved = self.block_search_path
        self.block_search_path = schemas
        try:
            if self.in_block_transaction or not self.get_autocommit():
                yield
                return
            self.ensure_connection()
            self.in_block_transaction = True
            try:
                with self.connection.transaction():
                    yield
            finally:
                self.in_block_transaction = False
                self.local_search_path = None
        finally:
            self.block_search_path = saved
            if self.local_search_path is not None:
                self.local_search_path = UNKNOWN

    def _set_local(self, raw_cursor: Any, wanted: tuple[str, ...] | None) -> None:
        if self.local_search_path == wanted:
            return
        path = ",".join(quote_schema_name(s) for s in wanted or (get_public_schema_name(),))
        raw_cursor.execute(SET_LOCAL_SEARCH_PATH, [path])
        self.local_search_path = wanted

    def _commit(self) -> None:
        try:
            super()._commit()
        finally:
            self.local_search_path = None

    def _rollback(self) -> None:
        try:
            super()._rollback()
        finally:
            self.local_search_path = None

    def _savepoint_rollback(self, sid: str) -> None:
        try:
            super()._savepoint_rollback(sid)
        finally:
            self.local_search_path = UNKNOWN

    def connect(self) -> None:
        self.local_search_path = None
        super().connect()

    def close(self) -> None:
        self.local_search_path = None
        super().close()

"""Introspection of the selected schema only, with the search_path transaction-local.

django-tenants' introspection reads the catalog with only the selected schema on the path, by a
session `SET search_path` before and another after (so a pooled server connection keeps whatever
the second one says). Here the same methods run in one transaction whose path is set locally.
"""

from __future__ import annotations

from typing import Any

from django.db.backends.postgresql.introspection import DatabaseIntrospection


class SchemaIntrospection(DatabaseIntrospection):
    """Django's PostgreSQL introspection, seeing the connection's selected schema only."""

    def _in_schema(self, method: Any, cursor: Any, *args: Any) -> Any:
        connection: Any = self.connection  # tenants.postgresql_backend's wrapper
        with connection.search_path_for_block((connection.schema_name,)):
            return method(cursor, *args)

    def get_table_list(self, cursor: Any) -> Any:
        return self._in_schema(super().get_table_list, cursor)

    def get_table_description(self, cursor: Any, table_name: str) -> Any:
        return self._in_schema(super().get_table_description, cursor, table_name)

    def get_sequences(self, cursor: Any, table_name: str, table_fields: Any = ()) -> Any:
        return self._in_schema(super().get_sequences, cursor, table_name, table_fields)

    def get_constraints(self, cursor: Any, table_name: str) -> Any:
        return self._in_schema(super().get_constraints, cursor, table_name)

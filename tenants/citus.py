"""Whether the database is a Citus coordinator, and what the platform does differently there.

On plain PostgreSQL nothing here changes behaviour. With the `citus` extension in the database,
DDL on distributed schemas goes one statement per query (Citus refuses a multi-statement string
there), tenant schemas are distributed at onboarding and the shared tables by `tenant_id`.
Asked once per process and database (an extension is not added to a running platform).
Importable anywhere: no Django.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

import psycopg

_known: dict[str, bool] = {}
_lock = threading.Lock()
# Each connection's key, made once: its host, port and database are three calls into libpq.
_keys: weakref.WeakKeyDictionary[psycopg.Connection[Any], str] = weakref.WeakKeyDictionary()


def is_citus(conn: psycopg.Connection) -> bool:
    """True when the connection's database has the citus extension (so it is a coordinator)."""
    with _lock:
        key = _keys.get(conn)
        if key is None:
            info = conn.info
            key = _keys[conn] = f"{info.host}:{info.port}/{info.dbname}"
        known = _known.get(key)
    if known is not None:
        return known
    row = conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'citus'").fetchone()
    found = bool(row and row[0])
    with _lock:
        _known[key] = found
    return found


def forget() -> None:
    """Ask again next time (tests that add or drop the extension)."""
    with _lock:
        _known.clear()

"""Count the round trips a psycopg connection makes, from libpq's own protocol trace.

Each request/response cycle ends with the server's ReadyForQuery, so counting those counts
round trips, BEGIN and COMMIT included (which a query log does not show).
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
from psycopg import pq

MESSAGE = re.compile(r"^([FB])\t\d+\t(\w+)\t?(.*)")


@contextmanager
def round_trips(conn: psycopg.Connection) -> Iterator[list[str]]:
    """The requests `conn` sends inside the block, one entry per round trip (filled at exit)."""
    sent: list[str] = []
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield sent
        finally:
            conn.pgconn.untrace()
            trace.seek(0)
            request = ""
            for line in trace:  # "F|B <tab> length <tab> message <tab> ..."; SQL may span lines
                found = MESSAGE.match(line)
                if found is None:
                    continue
                direction, message, rest = found.groups()
                if direction == "F" and message in ("Query", "Parse"):
                    request = request or rest.strip()[:120]
                elif direction == "B" and message == "ReadyForQuery":
                    sent.append(request)
                    request = ""

"""Count the round trips a psycopg connection makes, from libpq's own protocol trace, and those
this process's redis-py connections make.

Each request/response cycle ends with the server's ReadyForQuery, so counting those counts
round trips, BEGIN and COMMIT included (which a query log does not show). A redis-py connection
sends each command, or each pipeline's commands together, in one packed send and then reads the
replies, so counting its packed sends counts its round trips.
"""

from __future__ import annotations

import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
import redis.connection
from psycopg import pq

MESSAGE = re.compile(r"^([FB])\t\d+\t(\w+)\t?(.*)")


@contextmanager
def wire_messages(conn: psycopg.Connection) -> Iterator[list[tuple[str, str, str]]]:
    """Each protocol message `conn` sends (F) or reads (B) inside the block, in order, as
    (direction, message, the rest of libpq's trace line); filled at exit."""
    messages: list[tuple[str, str, str]] = []
    with tempfile.TemporaryFile("w+") as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield messages
        finally:
            conn.pgconn.untrace()
            trace.seek(0)
            for line in trace:  # "F|B <tab> length <tab> message <tab> ..."; SQL may span lines
                found = MESSAGE.match(line)
                if found is not None:
                    direction, message, rest = found.groups()
                    messages.append((direction, message, rest))


@contextmanager
def round_trips(conn: psycopg.Connection) -> Iterator[list[str]]:
    """The requests `conn` sends inside the block, one entry per round trip (filled at exit)."""
    sent: list[str] = []
    with wire_messages(conn) as messages:
        yield sent
    request = ""
    for direction, message, rest in messages:
        if direction == "F" and message in ("Query", "Parse"):
            request = request or rest.strip()[:120]
        elif direction == "B" and message == "ReadyForQuery":
            sent.append(request)
            request = ""


@contextmanager
def statements_completed(conn: psycopg.Connection) -> Iterator[list[str]]:
    """The command tags of the statements `conn` had the server complete inside the block (one
    per statement, BEGIN and COMMIT included, however many went in one round trip); filled at
    exit. A statement's cost on the server comes with it whether or not it has a round trip
    of its own."""
    tags: list[str] = []
    with wire_messages(conn) as messages:
        yield tags
    tags.extend(
        rest.strip().strip('"')
        for direction, message, rest in messages
        if direction == "B" and message == "CommandComplete"
    )


@contextmanager
def wire_exchanges(conn: psycopg.Connection) -> Iterator[list[list[str]]]:
    """What `conn` sends inside the block, as the statements of each exchange (filled at exit):
    an exchange is what the client sends until it asks for the answers (a simple Query, a
    pipeline's Sync or Flush) and then reads them, so a simple Query of several statements (a
    tenant's binding and a query sent together) or a pipeline is one exchange however many
    statements it holds, and what the client sends next, after reading, starts another. A
    statement prepared earlier shows as its Bind."""
    exchanges: list[list[str]] = []
    with wire_messages(conn) as messages:
        yield exchanges
    asked = answered = False  # the current exchange's
    previous = ""
    for direction, message, rest in messages:
        if direction == "B":
            answered = answered or asked
            continue
        if not exchanges or answered:
            exchanges.append([])
            asked = answered = False
        if message == "Query":  # a simple Query may hold several statements: each its own
            exchanges[-1].extend(f'"{statement}"'[:120] for statement in query_statements(rest))
        elif message == "Parse":
            exchanges[-1].append(rest.strip()[:120])
        elif message == "Bind" and previous != "Parse":
            exchanges[-1].append(f"Bind {rest.strip()[:60]}")
        asked = asked or message in ("Query", "Sync", "Flush")
        previous = message


_LEADING_SQL = re.compile(r'^(?:"[^"]*"\s+)?"([^"(]*)')


def query_statements(traced: str) -> list[str]:
    """The statements of a simple Query message as libpq's trace shows its first line (the
    text quoted; what follows a line break in the SQL is not on that line)."""
    import sqlparse  # Django's own dependency

    text = traced.strip()
    # Quoted; a statement with a line break goes on past this line of the trace, unclosed.
    text = text.removeprefix('"')
    text = text.removesuffix('"')
    statements = (statement.strip().rstrip(";").rstrip() for statement in sqlparse.split(text))
    return [statement for statement in statements if statement]


def statement_heads(sent: list[str]) -> list[str]:
    """Each round trip's statement up to its first parenthesis ("SELECT set_config"), whether it
    went as a simple Query ("BEGIN") or an extended Parse (which names a statement first)."""
    heads = []
    for request in sent:
        found = _LEADING_SQL.match(request)
        heads.append(found.group(1).strip() if found else request)
    return heads


@dataclass(frozen=True)
class RedisRoundTrip:
    """One packed send: the commands it carried (their names) and its bytes."""

    commands: tuple[str, ...]
    sent: bytes


_RESP_COMMAND = re.compile(rb"\*\d+\r\n\$\d+\r\n([A-Za-z]+)\r\n")


@contextmanager
def redis_round_trips() -> Iterator[list[RedisRoundTrip]]:
    """The round trips this process's redis-py connections make inside the block, filled as they
    happen (any thread, any client: the cache's, Celery's, a test's own)."""
    made: list[RedisRoundTrip] = []
    connection_class = redis.connection.AbstractConnection
    real = connection_class.send_packed_command

    def counted(self: object, command: object, check_health: bool = True) -> None:
        chunks = [command] if isinstance(command, (bytes, str)) else list(command)  # type: ignore[call-overload]
        sent = b"".join(c.encode() if isinstance(c, str) else bytes(c) for c in chunks)
        names = tuple(m.group(1).decode().upper() for m in _RESP_COMMAND.finditer(sent))
        made.append(RedisRoundTrip(names, sent))
        real(self, chunks, check_health)  # type: ignore[arg-type]

    connection_class.send_packed_command = counted  # type: ignore[method-assign]
    try:
        yield made
    finally:
        connection_class.send_packed_command = real  # type: ignore[method-assign]


def cache_reaches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every time this process asks the cache backend for a Redis client or its packed-command
    wire (the limiter's and tenant resolution's reads all do), from now on."""
    from control_plane.http.redis_cache import PooledClientRedisCacheClient

    reached: list[int] = []
    for name in ("get_client", "get_wire"):
        real = getattr(PooledClientRedisCacheClient, name)

        def counting(self: object, *args: Any, _real: Any = real, **kwargs: Any) -> Any:
            reached.append(1)
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(PooledClientRedisCacheClient, name, counting)
    return reached

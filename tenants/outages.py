"""Telling an outage from a bug: a database or broker that cannot be reached answers 503, not 500.

A connection-level failure (no connection could be made, the server closed it, an administrator
shut the server down, it is starting or stopping) is the platform's state, not the request's: the
caller gets 503 problem+json with Retry-After and may try again. Any other database error (a
constraint, a bad statement, a lock timeout handled elsewhere) stays what it was. Django's ORM
and SQLAlchemy both wrap the driver's error; both are unwrapped here.
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import sqlalchemy as sa
from django import db as django_db
from django.http import HttpResponse

from tenants.problems import Problem, problem_response

RETRY_AFTER_SECONDS = 5
# Class 08 is "connection exception"; 57P01-57P03: admin shutdown, crash shutdown, cannot connect now.
_CONNECTION_STATES = {"57P01", "57P02", "57P03"}


class ServiceUnavailable(Problem):
    status = 503
    title = "Service unavailable"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        todo += [getattr(current, "orig", None), current.__cause__, current.__context__]


def is_connection_failure(exc: BaseException) -> bool:
    """Whether `exc` says the database could not be reached or dropped the connection."""
    for error in _chain(exc):
        if isinstance(error, sa.exc.DisconnectionError) or (
            isinstance(error, sa.exc.DBAPIError) and error.connection_invalidated
        ):
            return True
        if isinstance(error, psycopg.Error):
            state = error.sqlstate
            if isinstance(error, psycopg.InterfaceError | psycopg.OperationalError) and not state:
                return True  # no server answer at all: refused, closed, lost
            return state is not None and (state.startswith("08") or state in _CONNECTION_STATES)
        if isinstance(error, django_db.InterfaceError):
            return True  # Django's own "connection already closed"
    return False


def database_unavailable() -> ServiceUnavailable:
    return ServiceUnavailable(
        "The database cannot be reached just now; retry shortly.", retry_after=RETRY_AFTER_SECONDS
    )


def unavailable_response(problem: ServiceUnavailable) -> HttpResponse:
    """`problem` as a response, for code outside DRF (middleware, the 500 handler)."""
    response = problem_response(problem.status, problem.title, problem.detail)
    response["Retry-After"] = str(problem.extra.get("retry_after", RETRY_AFTER_SECONDS))
    return response

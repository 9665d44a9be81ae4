"""The request id: one per request, carried wherever its work goes.

The web side (control_plane.observability.middleware) accepts a well-formed X-Request-ID or makes
one, and echoes it; here it becomes the current context's id, so log lines carry it, a Celery task
sent meanwhile carries it in its message headers, and the task's own log lines (and, for imports,
the history rows it writes through `app.request_id`) carry it again on the worker.

It must never raise into a request or a task: a message without the header simply runs without id.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import Any

import structlog

HEADER = "X-Request-ID"
# The message header a task carries its request id in (Celery keeps custom headers on
# task.request, protocol 2).
TASK_HEADER = "request_id"

_current: ContextVar[str | None] = ContextVar("request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request (or task) this code runs for, if any."""
    return _current.get()


def enter(request_id: str | None, **log_context: Any) -> Token[str | None]:
    """Make `request_id` current for this context and its log lines; undo with `leave`."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=request_id, **log_context)
    return _current.set(request_id)


def leave(token: Token[str | None]) -> None:
    _current.reset(token)
    structlog.contextvars.clear_contextvars()


def stamp_message(headers: dict[str, Any] | None) -> None:
    """before_task_publish: the current request id into the message's headers (never replaced)."""
    request_id = _current.get()
    if headers is not None and request_id and not headers.get(TASK_HEADER):
        headers[TASK_HEADER] = request_id


def of_task(task: Any) -> str | None:
    """The request id a task's message carries, if any."""
    value = getattr(task.request, TASK_HEADER, None)
    if value is None:
        value = (getattr(task.request, "headers", None) or {}).get(TASK_HEADER)
    return value if isinstance(value, str) else None

"""Log lines of web, workers and beat: JSON (LOG_FORMAT=json) or for a human (console).

structlog renders every record, the platform's own and those of Django, Celery, gunicorn's
error log and libraries through the standard library: one line each, with timestamp, level,
event, logger, and the context bound for the request or task (request id, tenant slug, isolation
mode, user id, route, status, duration; the trace id when tracing is on).

No secret may reach a line: `redact` runs last before rendering, on every record; it replaces
values under secret-looking keys and any API token or bearer credential inside any string.

The access line every request writes (control_plane.observability.middleware) has a renderer of
its own in JSON mode (`access_line`): the same fields, context and redaction as structlog's
processors would give it, without running the chain of processors per line.
"""

from __future__ import annotations

import contextvars
import datetime
import functools
import logging
import re
import sys
from collections.abc import Callable, Mapping, MutableMapping
from typing import Any

import orjson
import structlog

# API tokens are tf_<hex prefix>_<secret> (control_plane.identity.tokens): the prefix stays.
TOKEN = re.compile(r"\b(tf_[0-9a-f]{4,32}_)[A-Za-z0-9_\-]{8,}")
BEARER = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[^\s,;\"']+")
SECRET_KEYS = re.compile(r"(?i)token|secret|password|authorization|cookie|api[_-]?key")
# One search first: most strings hold nothing like a credential and cost no substitution.
SUSPECT = re.compile(r"(?i)tf_|bearer|basic|token")
REDACTED = "[redacted]"
NOT_SECRET_KEYS = frozenset({"event", "exc_info"})


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    return key not in NOT_SECRET_KEYS and SECRET_KEYS.search(key) is not None


def _suspect(text: str) -> bool:
    """SUSPECT.search(text), cheaper: a case-insensitive regex search tries every position of
    every string of every line. For ASCII text, lower-casing it is the same match."""
    if text.isascii():
        lowered = text.lower()
        return "tf_" in lowered or "token" in lowered or "bearer" in lowered or "basic" in lowered
    return SUSPECT.search(text) is not None


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        if not _suspect(value):
            return value
        return BEARER.sub(rf"\1\2{REDACTED}", TOKEN.sub(rf"\1{REDACTED}", value))
    if isinstance(value, dict):
        return {k: REDACTED if _secret_key(str(k)) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> dict[str, Any]:
    """No token, password or credential in a log line, whatever the code logged."""
    return {
        key: REDACTED if _secret_key(key) else _scrub(value) for key, value in event_dict.items()
    }


def _json(event_dict: Any, **_: Any) -> str:
    return orjson.dumps(event_dict, default=str).decode()


# tracing's current_trace_id, looked up on the first line (settings import this module first).
_trace_id: Callable[[], str | None] | None = None


def _add_trace_id(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    global _trace_id
    if _trace_id is None:
        from control_plane.observability.tracing import current_trace_id

        _trace_id = current_trace_id
    trace_id = _trace_id()
    if trace_id:
        event_dict["trace_id"] = trace_id
    return event_dict


ACCESS_LOGGER = "taskflow.request"
ACCESS_EVENT = "request"
_UTC = datetime.UTC
_now = datetime.datetime.now
_STRUCTLOG_PREFIX = structlog.contextvars.STRUCTLOG_KEY_PREFIX
# structlog's own registry of the context's variables (one per key ever bound): reading those
# few is what merge_contextvars finds by walking every variable of the context.
_CONTEXT_VARS: Mapping[str, contextvars.ContextVar[Any]] | None = getattr(
    structlog.contextvars, "_CONTEXT_VARS", None
)


def bound_context() -> dict[str, Any]:
    """structlog.contextvars.get_contextvars(), read from structlog's registry of variables."""
    if _CONTEXT_VARS is None:  # a structlog without it
        return structlog.contextvars.get_contextvars()
    found = {}
    for name, var in tuple(_CONTEXT_VARS.items()):
        value = var.get(Ellipsis)
        if value is not Ellipsis:
            found[name.removeprefix(_STRUCTLOG_PREFIX)] = value
    return found


class JsonAccessLine:
    """Writes the access line as shared_processors, redact and the JSON renderer would: the
    logger's name, the fields, the event, the bound context (what the fields do not name), level,
    timestamp, trace id, and no secret: redact's rules on the fields and the context (a value
    under a secret-looking key replaced, every string scrubbed)."""

    def __init__(self, file: Any, level: int) -> None:
        self.enabled = level <= logging.INFO
        self.write = structlog.WriteLoggerFactory(file=file)().msg  # structlog's lock per file

    def __call__(self, fields: Mapping[str, Any]) -> None:
        if not self.enabled:
            return
        line: dict[str, Any] = {"logger": ACCESS_LOGGER}
        for key, value in fields.items():
            line[key] = REDACTED if _secret_key(key) else _scrub(value)
        line["event"] = ACCESS_EVENT
        for key, value in bound_context().items():
            if key not in line:
                line[key] = REDACTED if _secret_key(key) else _scrub(value)
        line["level"] = "info"
        line["timestamp"] = _now(_UTC)
        _add_trace_id(None, "info", line)
        self.write(orjson.dumps(line, default=str, option=orjson.OPT_UTC_Z).decode())


_access_line: JsonAccessLine | None = None


def access_line(fields: Mapping[str, Any]) -> None:
    """One request's access line (event "request") at INFO, with the request's bound context."""
    if _access_line is not None:
        _access_line(fields)
    else:  # console: structlog's renderer, for a human
        structlog.get_logger().info(ACCESS_EVENT, logger=ACCESS_LOGGER, **fields)


def shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_id,
    ]


def _renderer(log_format: str) -> Any:
    if log_format == "json":
        return structlog.processors.JSONRenderer(serializer=_json)
    return structlog.dev.ConsoleRenderer(colors=False)


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """settings.LOGGING: every standard-library record rendered by structlog."""
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if log_format == "json":
        final.append(structlog.processors.format_exc_info)
    final += [redact, _renderer(log_format)]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": final,
                "foreign_pre_chain": [
                    *shared_processors(),
                    structlog.stdlib.add_logger_name,
                    structlog.stdlib.ExtraAdder(),
                ],
            }
        },
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "structlog"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "alembic": {"level": "WARNING"},
            # The access line is the platform's own (control_plane.observability.middleware).
            "django.request": {"level": "ERROR"},
            "django.server": {"level": "WARNING"},
            "gunicorn.error": {"handlers": ["console"], "propagate": False, "level": level},
        },
    }


def configure_structlog(*, log_format: str, level: str) -> None:
    """The platform's own lines (structlog loggers: the access line, task lines) are rendered and
    written to stderr directly, one write each, without a standard-library record and its
    formatter, which would double the cost of the access line every request writes. Same
    processors, same stream as the records of Django, Celery and libraries."""
    global _access_line
    _access_line = None
    if log_format == "json":
        _access_line = JsonAccessLine(sys.stderr, logging.getLevelName(level.upper()))
    structlog.configure(
        processors=[
            *shared_processors(),
            structlog.processors.format_exc_info,
            redact,
            _renderer(log_format),
        ],
        logger_factory=structlog.WriteLoggerFactory(file=sys.stderr),
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        cache_logger_on_first_use=True,
    )

"""Log lines of web, workers and beat: JSON (LOG_FORMAT=json) or for a human (console).

structlog renders every record, the platform's own and those of Django, Celery, gunicorn's
error log and libraries through the standard library: one line each, with timestamp, level,
event, logger, and the context bound for the request or task (request id, tenant slug, isolation
mode, user id, route, status, duration; the trace id when tracing is on).

No secret may reach a line: `redact` runs last before rendering, on every record; it replaces
values under secret-looking keys and any API token or bearer credential inside any string.
"""

from __future__ import annotations

import functools
import logging
import re
import sys
from collections.abc import Callable, MutableMapping
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


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        if SUSPECT.search(value) is None:
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

"""Log lines of web, workers and beat: JSON (LOG_FORMAT=json) or for a human (console).

structlog renders every record, the platform's own and those of Django, Celery, gunicorn's
error log and libraries through the standard library: one line each, with timestamp, level,
event, logger, and the context bound for the request or task (request id, tenant slug, isolation
mode, user id, route, status, duration; the trace id when tracing is on).

No secret may reach a line: `redact` runs last before rendering, on every record; it replaces
values under secret-looking keys and any API token or bearer credential inside any string.
"""

from __future__ import annotations

import re
from typing import Any

import structlog

# API tokens are tf_<hex prefix>_<secret> (control_plane.identity.tokens): the prefix stays.
TOKEN = re.compile(r"\b(tf_[0-9a-f]{4,32}_)[A-Za-z0-9_\-]{8,}")
BEARER = re.compile(r"(?i)\b(bearer|basic|token)(\s+)[^\s,;\"']+")
SECRET_KEYS = re.compile(r"(?i)token|secret|password|authorization|cookie|api[_-]?key")
REDACTED = "[redacted]"


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return BEARER.sub(rf"\1\2{REDACTED}", TOKEN.sub(rf"\1{REDACTED}", value))
    if isinstance(value, dict):
        return {k: REDACTED if SECRET_KEYS.search(str(k)) else _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """No token, password or credential in a log line, whatever the code logged."""
    scrubbed: dict[str, Any] = {}
    for key, value in event_dict.items():
        if key != "event" and key != "exc_info" and SECRET_KEYS.search(key):
            scrubbed[key] = REDACTED
        else:
            scrubbed[key] = _scrub(value)
    return scrubbed


def _add_trace_id(_logger: Any, _method: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    from control_plane.observability.tracing import current_trace_id

    trace_id = current_trace_id()
    if trace_id:
        event_dict["trace_id"] = trace_id
    return event_dict


def shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _add_trace_id,
    ]


def logging_config(*, log_format: str, level: str) -> dict[str, Any]:
    """settings.LOGGING: every standard-library record rendered by structlog."""
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if log_format == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    final: list[Any] = [structlog.stdlib.ProcessorFormatter.remove_processors_meta]
    if log_format == "json":
        final.append(structlog.processors.format_exc_info)
    final += [redact, renderer]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": final,
                "foreign_pre_chain": [*shared_processors(), structlog.stdlib.ExtraAdder()],
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


def configure_structlog() -> None:
    """structlog's own loggers hand their records to the standard library's (the one output)."""
    structlog.configure(
        processors=[
            *shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )

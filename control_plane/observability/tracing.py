"""OpenTelemetry traces across web -> Celery -> SQL, off unless configured.

On when TRACING_EXPORTER is `otlp` (the default when OTEL_EXPORTER_OTLP_ENDPOINT is set; the
exporter reads OTEL_EXPORTER_OTLP_* itself) or `console` (spans as JSON on stdout, for a look
or a test). The contrib instrumentations do the work: Django (a span per request), Celery
(publish and run, the context carried in the message), psycopg (a span per statement, Django's
and SQLAlchemy's alike, since both connect through psycopg).

Started once per process that serves: each gunicorn worker (control_plane.wsgi) and each pool
process of a Celery worker (after the fork: the span processor's thread does not survive one).
Off, nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from django.conf import settings

logger = logging.getLogger(__name__)

_started = False


def current_trace_id() -> str | None:
    """The current span's trace id in hex, for log lines; None when tracing is off."""
    if not _started:
        return None
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def _exporter(kind: str) -> Any:
    if kind == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        # The process's real stdout: a Celery worker redirects sys.stdout into its log.
        return ConsoleSpanExporter(out=sys.__stdout__ or sys.stdout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()


def start_tracing(service: str) -> bool:
    """Install the tracer provider and the instrumentations, if configured; True when on."""
    global _started
    kind = settings.TRACING_EXPORTER
    if _started or not kind:
        return _started
    from opentelemetry import trace
    from opentelemetry.instrumentation.celery import CeleryInstrumentor
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", f"taskflow-{service}")}
        )
    )
    exporter = _exporter(kind)
    processor = SimpleSpanProcessor(exporter) if kind == "console" else BatchSpanProcessor(exporter)
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    DjangoInstrumentor().instrument(tracer_provider=provider)
    CeleryInstrumentor().instrument(tracer_provider=provider)
    PsycopgInstrumentor().instrument(tracer_provider=provider, skip_dep_check=True)
    _started = True
    logger.info("tracing on", extra={"exporter": kind, "service": service})
    return True

"""What operators see of the platform: request ids, log lines, metrics and traces.

Small modules, one job each: request_ids (the id and where it travels), middleware (the request
side), worker_signals (the Celery side), logging (structlog's configuration and redaction),
metrics (the Prometheus instruments), exposition (serving them, never publicly), tracing
(OpenTelemetry, off unless configured).
"""

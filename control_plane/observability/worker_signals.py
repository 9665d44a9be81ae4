"""What a Celery process adds to its tasks: the request id, log context, metrics, traces.

Publishing (web or worker) stamps the current request id and the publish time into the message's
headers; the worker makes that id current while the task runs, so every log line of the job
carries it, observes the wait in the queue and the run time per queue, and logs one line per
finished task. The main process of a worker clears its metrics folder and serves the pool's
metrics on WORKER_METRICS_PORT; each pool process says when it exits, so its live gauges leave
with it.

Connected by importing this module (control_plane.celery does). Nothing here may fail a task.
"""

from __future__ import annotations

import os
import time
from contextvars import Token
from pathlib import Path
from typing import Any

import structlog
from celery.signals import (
    before_task_publish,
    task_postrun,
    task_prerun,
    worker_init,
    worker_process_init,
    worker_process_shutdown,
)
from django.conf import settings

from control_plane.observability import metrics, request_ids

logger = structlog.get_logger().bind(logger="taskflow.task")
PUBLISHED_HEADER = "published_at"

_running: dict[str, tuple[Token[str | None], float]] = {}


@before_task_publish.connect
def stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    request_ids.stamp_message(headers)
    if headers is not None:
        headers.setdefault(PUBLISHED_HEADER, time.time())


@task_prerun.connect
def task_started(task_id: str = "", task: Any = None, **_: Any) -> None:
    if task is None:
        return
    request_id = request_ids.of_task(task)
    token = request_ids.enter(request_id, task=task.name, task_id=task_id)
    _running[task_id] = (token, time.perf_counter())
    if metrics.enabled():
        published = getattr(task.request, PUBLISHED_HEADER, None)
        if isinstance(published, int | float):
            metrics.TASK_WAIT.labels(_queue(task)).observe(max(time.time() - published, 0.0))


@task_postrun.connect
def task_finished(task_id: str = "", task: Any = None, state: str | None = None, **_: Any) -> None:
    token, started = _running.pop(task_id, (None, time.perf_counter()))
    seconds = time.perf_counter() - started
    try:
        if task is not None:
            queue = _queue(task)
            if metrics.enabled():
                metrics.TASK_RUN.labels(queue).observe(seconds)
                metrics.TASKS.labels(queue, (state or "unknown").lower()).inc()
            logger.info("task finished", queue=queue, state=state, duration_ms=seconds * 1000)
    finally:
        if token is not None:
            request_ids.leave(token)


def _queue(task: Any) -> str:
    info = getattr(task.request, "delivery_info", None) or {}
    return str(info.get("routing_key") or "unknown")


@worker_init.connect
def worker_starting(**_: Any) -> None:
    """In the worker's main process, before the pool starts."""
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:  # files of an earlier run (pids get reused) would add to this one's
        for stale in Path(folder).glob("*.db"):
            stale.unlink(missing_ok=True)
    if metrics.enabled() and settings.METRICS_TOKEN and settings.WORKER_METRICS_PORT:
        from control_plane.observability.exposition import serve_worker_metrics

        serve_worker_metrics(settings.WORKER_METRICS_PORT, settings.METRICS_BIND_ADDRESS)


@worker_process_init.connect
def pool_process_started(**_: Any) -> None:
    from control_plane.observability.tracing import start_tracing

    start_tracing("worker")


@worker_process_shutdown.connect
def pool_process_exiting(**_: Any) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())

"""Serving the metrics to Prometheus, never to the public.

Web answers GET /metrics (on any host, before tenant resolution) only with
`Authorization: Bearer <METRICS_TOKEN>`: 401 without or with another token, 404 when no token is
configured or METRICS_ENABLED is off. A Celery worker's main process serves the same, for the
pool's processes, on WORKER_METRICS_PORT (a port of its own: the worker has no web server), with
the same token. Either merges its server's PROMETHEUS_MULTIPROC_DIR when one is set; web adds the
Celery queues' depths, read from the broker at scrape time.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from tenants.problems import problem_response

logger = logging.getLogger(__name__)


def authorized(header: str | None) -> bool:
    """The Authorization header carries METRICS_TOKEN (compared in constant time)."""
    token = settings.METRICS_TOKEN
    if not token or not header or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[len("Bearer ") :].encode(), token.encode())


def registry(*, with_queues: bool) -> CollectorRegistry:
    """What a scrape reads: every process of this server's, or this process alone."""
    scrape = CollectorRegistry()
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if folder:
        forget_dead_processes(Path(folder))
        multiprocess.MultiProcessCollector(scrape)
    else:
        scrape.register(_Merged(REGISTRY))
    if with_queues:
        scrape.register(QueueDepth())
    return scrape


def forget_dead_processes(folder: Path) -> None:
    """Drop the live gauges of processes that died without saying so (SIGKILL, OOM)."""
    for path in folder.glob("gauge_live*_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1]) if path.stem.rsplit("_", 1)[1].isdigit() else 0
        if pid and not _alive(pid):
            multiprocess.mark_process_dead(pid, str(folder))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def metrics_response(request: HttpRequest) -> HttpResponse:
    """GET /metrics on web."""
    if not settings.METRICS_ENABLED or not settings.METRICS_TOKEN:
        return problem_response(404, "Not Found", f"Nothing is served at {request.path!r}.")
    if not authorized(request.headers.get("Authorization")):
        refused = problem_response(401, "Unauthorized", "Metrics need the metrics bearer token.")
        refused["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return refused
    body = generate_latest(registry(with_queues=True))
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)


class _Merged(Collector):
    def __init__(self, source: CollectorRegistry) -> None:
        self.source = source

    def collect(self) -> Iterable[Any]:
        return self.source.collect()


class QueueDepth(Collector):
    """Messages waiting in each Celery queue (the broker's Redis lists), read when scraped."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from control_plane.celery import QUEUES, app

        family = GaugeMetricFamily(
            "taskflow_celery_queue_length", "Messages waiting in a Celery queue.", labels=["queue"]
        )
        try:
            with app.connection_for_read() as connection:
                channel: Any = connection.default_channel
                client = channel.client
                for queue in QUEUES:
                    family.add_metric([queue], float(client.llen(queue)))
        except Exception:  # the broker is down: the scrape still answers, without depths
            logger.warning("queue depth unavailable", exc_info=True)
            return
        yield family


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def worker_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The worker's exporter: the same token, every process of the pool."""
    if environ.get("PATH_INFO") != "/metrics":
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found\n"]
    if not authorized(environ.get("HTTP_AUTHORIZATION")):
        start_response("401 Unauthorized", [("WWW-Authenticate", 'Bearer realm="metrics"')])
        return [b"unauthorized\n"]
    start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
    return [generate_latest(registry(with_queues=False))]


class _ThreadingServer(WSGIServer):
    daemon_threads = True


def serve_worker_metrics(port: int, address: str) -> WSGIServer:
    """Start the worker's exporter on a daemon thread of the calling (main) process."""
    server = make_server(address, port, worker_app, _ThreadingServer, handler_class=_Quiet)
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server

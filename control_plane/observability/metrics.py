"""The platform's Prometheus metrics: what they are, and how a process records them.

Every process records into prometheus_client's default registry. Under gunicorn and Celery's
prefork pool PROMETHEUS_MULTIPROC_DIR names a folder the processes of one server share (one file
per process, written through mmap, no lock across processes); the process that answers a scrape
merges them (control_plane.observability.exposition). The folder must be set before
prometheus_client is imported: gunicorn's hooks (control_plane.observability.gunicorn_conf) make
one, workers are given one by their launcher (compose, dev.sh); without it each process counts
alone, as runserver does.

Label values are bounded: routes are URL templates (never paths), statuses are classes, and
tenants are their slug only among the busiest METRICS_TENANT_TOP_K of this process, else "other".
Recording must never raise into a request or a task.
"""

from __future__ import annotations

import bisect
import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

from django.conf import settings
from prometheus_client import Counter, Gauge, Histogram

NAMESPACE = "taskflow"
OTHER = "other"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
TASK_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 1800.0)

HTTP_REQUESTS = Counter(
    "http_requests",
    "Requests answered, by route template, method, status class, isolation mode and tenant.",
    ["route", "method", "status", "isolation", "tenant"],
    namespace=NAMESPACE,
)
HTTP_LATENCY = Histogram(
    "http_request_duration_seconds",
    "Time from the outermost middleware in to the response out.",
    ["route", "method", "isolation"],
    namespace=NAMESPACE,
    buckets=LATENCY_BUCKETS,
)
PRINCIPAL_CACHE = Counter(
    "principal_cache_lookups",
    "Bearer-token principal lookups in the Redis cache, by outcome (hit, miss).",
    ["outcome"],
    namespace=NAMESPACE,
)
DB_POOL_IN_USE = Gauge(
    "db_pool_connections_in_use",
    "SQLAlchemy pool connections checked out now (summed over live processes).",
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)
DB_POOL_OVERFLOW = Counter(
    "db_pool_overflow_checkouts",
    "Checkouts past the pool's size (past size + overflow a checkout waits): the pool is short.",
    namespace=NAMESPACE,
)
TASKS = Counter(
    "celery_tasks",
    "Celery tasks finished on this worker, by queue and outcome.",
    ["queue", "outcome"],
    namespace=NAMESPACE,
)
TASK_WAIT = Histogram(
    "celery_task_queue_wait_seconds",
    "From publishing a task to a worker starting it, by queue.",
    ["queue"],
    namespace=NAMESPACE,
    buckets=TASK_BUCKETS,
)
TASK_RUN = Histogram(
    "celery_task_run_seconds",
    "A task's run time on the worker, by queue.",
    ["queue"],
    namespace=NAMESPACE,
    buckets=TASK_BUCKETS,
)
FANOUT_SCHEMAS = Counter(
    "fanout_schemas",
    "Tenant schemas a migration fan-out finished, by status (rate: schemas/s).",
    ["status"],
    namespace=NAMESPACE,
)
IMPORT_ROWS = Counter(
    "import_rows", "Rows read by finished imports (rate: rows/s).", namespace=NAMESPACE
)
IMPORT_REJECTS = Counter(
    "import_rejected_rows", "Rows finished imports rejected.", namespace=NAMESPACE
)
IMPORT_JOBS = Counter(
    "import_jobs", "Import attempts finished, by status.", ["status"], namespace=NAMESPACE
)
RATE_LIMIT_FAIL_OPEN = Counter(
    "rate_limit_fail_open",
    "Rate-limit checks that let a request in unchecked, by reason: Redis did not answer "
    "(unreachable) or its circuit breaker was open after it had not (breaker_open).",
    ["reason"],
    namespace=NAMESPACE,
)
IMPORT_PHASE = Gauge(
    "import_jobs_in_phase",
    "Imports running now, by pipeline phase.",
    ["phase"],
    namespace=NAMESPACE,
    multiprocess_mode="livesum",
)


def enabled() -> bool:
    return bool(settings.METRICS_ENABLED)


class TopTenants:
    """The label for a tenant: its slug if it holds one of this process's `k` slots, else "other".

    Slots go to the busiest tenants: every `refresh_seconds` (the first time one period after
    start, so the first requests do not take them all), free slots go to the tenants with the
    most requests since, unlabelled ones first. A slot is kept for the process's life, so a
    process never gives more than `k` tenants a label of their own, however many it serves, and
    no series comes and goes; a tenant that becomes busy once the slots are taken gets one in a
    new process (gunicorn's --max-requests recycles them).
    """

    def __init__(
        self, k: int, refresh_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.k = k
        self.refresh_seconds = refresh_seconds
        self.clock = clock
        self.counts: dict[str, int] = {}
        self.labelled: frozenset[str] = frozenset()
        self.next_refresh = clock() + refresh_seconds
        self.lock = threading.Lock()

    def label(self, slug: str) -> str:
        if slug in self.labelled:
            return slug
        with self.lock:
            if len(self.labelled) < self.k:
                self.counts[slug] = self.counts.get(slug, 0) + 1
                if self.clock() >= self.next_refresh:
                    self._refresh()
        return slug if slug in self.labelled else OTHER

    def _refresh(self) -> None:
        free = self.k - len(self.labelled)
        busiest = heapq.nlargest(free, self.counts.items(), key=lambda item: item[1])
        self.labelled = self.labelled | {slug for slug, _ in busiest}
        self.counts = {}
        self.next_refresh = self.clock() + self.refresh_seconds


_top_tenants: TopTenants | None = None


def tenant_label(slug: str) -> str:
    global _top_tenants
    if _top_tenants is None:
        _top_tenants = TopTenants(
            settings.METRICS_TENANT_TOP_K, settings.METRICS_TENANT_REFRESH_SECONDS
        )
    return _top_tenants.label(slug)


def status_class(status: int) -> str:
    return f"{status // 100}xx"


# What one label set's request writes, held once: the values (prometheus_client's mmap-backed
# ones under PROMETHEUS_MULTIPROC_DIR) of the counter's series and of the histogram's sum and
# buckets, as Counter.inc and Histogram.observe would write them. Asking .labels() again costs a
# lock, string conversions and a lookup per metric, and inc/observe check the metric and walk
# the buckets, on every request. Bounded as the label values are.
_request_values: dict[tuple[str, ...], Any] = {}
_latency_values: dict[tuple[str, ...], tuple[Any, tuple[Any, ...], tuple[float, ...]]] = {}


def _latency_of(labels: tuple[str, ...]) -> tuple[Any, tuple[Any, ...], tuple[float, ...]]:
    child: Any = HTTP_LATENCY.labels(*labels)
    return child._sum, tuple(child._buckets), tuple(child._upper_bounds)


def observe_request(
    *, route: str, method: str, status: int, isolation: str, tenant: str, seconds: float
) -> None:
    """One answered request."""
    labels = (route, method, status_class(status), isolation, tenant_label(tenant))
    requests = _request_values.get(labels)
    if requests is None:
        child: Any = HTTP_REQUESTS.labels(*labels)
        requests = _request_values[labels] = child._value
    requests.inc(1)
    timed = (route, method, isolation)
    latency = _latency_values.get(timed)
    if latency is None:
        latency = _latency_values[timed] = _latency_of(timed)
    total, buckets, bounds = latency
    total.inc(seconds)
    # The first bucket whose upper bound is >= seconds (the last is +Inf), as observe() finds.
    buckets[bisect.bisect_left(bounds, seconds)].inc(1)


_principal_values: dict[bool, Any] = {}


def count_principal_lookup(hit: bool) -> None:
    if enabled():
        value = _principal_values.get(hit)
        if value is None:
            child: Any = PRINCIPAL_CACHE.labels("hit" if hit else "miss")
            value = _principal_values[hit] = child._value
        value.inc(1)


def watch_pools() -> None:
    """Count SQLAlchemy pool checkouts of this process (every engine's QueuePool)."""
    from sqlalchemy import event
    from sqlalchemy.pool import QueuePool

    def checked_out(_dbapi: object, _record: object, proxy: object) -> None:
        DB_POOL_IN_USE.inc()
        pool = getattr(proxy, "_pool", None)
        if isinstance(pool, QueuePool) and pool.checkedout() > pool.size():
            DB_POOL_OVERFLOW.inc()

    def checked_in(_dbapi: object, _record: object) -> None:
        DB_POOL_IN_USE.dec()

    event.listen(QueuePool, "checkout", checked_out)
    event.listen(QueuePool, "checkin", checked_in)


def import_phase_changed(before: str, after: str) -> None:
    """An import attempt moved from phase `before` to `after` ("" is not running)."""
    if enabled():
        if before:
            IMPORT_PHASE.labels(before).dec()
        if after:
            IMPORT_PHASE.labels(after).inc()


def import_finished(*, status: str, rows: int, rejected: int) -> None:
    if enabled():
        IMPORT_JOBS.labels(status).inc()
        IMPORT_ROWS.inc(rows)
        IMPORT_REJECTS.inc(rejected)


def fanout_steps_recorded(statuses: list[str]) -> None:
    """Tenant schemas a fan-out batch finished (succeeded, skipped, failed)."""
    if enabled():
        for status in statuses:
            FANOUT_SCHEMAS.labels(status).inc()


def rate_limit_failed_open(reason: str) -> None:
    """One rate-limit check let a request in unchecked (control_plane.ratelimits.limiter)."""
    if enabled():
        RATE_LIMIT_FAIL_OPEN.labels(reason).inc()

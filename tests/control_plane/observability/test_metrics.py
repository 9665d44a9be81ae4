"""Prometheus metrics: bounded tenant labels, an endpoint that is not public, and the numbers of
several gunicorn workers and Celery pool processes added up by one scrape."""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
from django.test import Client, override_settings
from prometheus_client import REGISTRY

from control_plane.celery import app as celery_app
from control_plane.observability import metrics
from control_plane.observability.metrics import OTHER, TopTenants
from tests.conftest import ROOT, WorkerProcess
from tests.control_plane.observability.conftest import METRICS_TOKEN, samples
from tests.processes import free_port, start_redis, stop_process
from tests.taskflow.conftest import TenantFixture

# --- Tenant labels ------------------------------------------------------------------------------


def test_only_the_busiest_tenants_get_a_label_of_their_own() -> None:
    now = [0.0]
    top = TopTenants(k=3, refresh_seconds=10, clock=lambda: now[0])
    for _ in range(20):
        for slug in ("big1", "big2", "big3"):
            top.label(slug)
    for i in range(100):
        top.label(f"small{i}")
    now[0] = 11  # the first refresh hands out the slots
    assert top.label("small0") == OTHER
    assert {top.label(s) for s in ("big1", "big2", "big3")} == {"big1", "big2", "big3"}
    # Slots are kept: later traffic does not take them, and no new series appears.
    for _ in range(50):
        top.label("late")
    now[0] = 30
    assert top.label("late") == OTHER
    assert top.label("big1") == "big1"


def test_series_stay_bounded_with_a_thousand_active_tenants() -> None:
    route = f"/bounded-{time.monotonic_ns()}"
    with override_settings(METRICS_TENANT_TOP_K=10, METRICS_TENANT_REFRESH_SECONDS=0.001):
        metrics._top_tenants = None
        try:
            for round_ in range(5):
                for i in range(1000):
                    metrics.observe_request(
                        route=route,
                        method="GET",
                        status=200 if i % 7 else 404,
                        isolation="rls",
                        tenant=f"tenant{(i * 7 + round_) % 1000}",
                        seconds=0.01,
                    )
                time.sleep(0.002)  # a refresh between rounds: slots cannot churn
        finally:
            metrics._top_tenants = None
    series = [
        s
        for family in REGISTRY.collect()
        if family.name == "taskflow_http_requests"
        for s in family.samples
        if s.name.endswith("_total") and s.labels["route"] == route
    ]
    tenants = {s.labels["tenant"] for s in series}
    assert OTHER in tenants
    assert len(tenants) <= 10 + 1
    assert len(series) <= (10 + 1) * 2  # x two status classes
    assert sum(s.value for s in series) == 5000


# --- The endpoint -------------------------------------------------------------------------------


@pytest.mark.django_db
@override_settings(METRICS_TOKEN=METRICS_TOKEN)
def test_metrics_need_the_token() -> None:
    client = Client(HTTP_HOST="localhost")
    refused = client.get("/metrics")
    assert refused.status_code == 401
    assert refused["Content-Type"].startswith("application/problem+json")
    assert refused["WWW-Authenticate"].startswith("Bearer")
    wrong = client.get("/metrics", headers={"Authorization": "Bearer not-it"})
    assert wrong.status_code == 401
    # Any host: the endpoint answers before tenant resolution, and needs the token there too.
    assert Client(HTTP_HOST="nobody.localhost").get("/metrics").status_code == 401
    served = client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert served.status_code == 200
    body = served.content.decode()
    assert "taskflow_http_requests_total" in body
    assert "taskflow_celery_queue_length" in body


@pytest.mark.django_db
@override_settings(METRICS_TOKEN="")
def test_no_token_configured_no_endpoint() -> None:
    assert Client(HTTP_HOST="localhost").get("/metrics").status_code == 404


@pytest.mark.django_db
@override_settings(METRICS_ENABLED=False, METRICS_TOKEN=METRICS_TOKEN)
def test_metrics_off_no_endpoint() -> None:
    response = Client(HTTP_HOST="localhost").get(
        "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"}
    )
    assert response.status_code == 404


# --- Several processes --------------------------------------------------------------------------


def test_one_scrape_adds_up_every_gunicorn_worker(
    gunicorn: Any, live_tenant: TenantFixture, committed: None
) -> None:
    server = gunicorn(workers=3, METRICS_TOKEN=METRICS_TOKEN)
    auth = {"Authorization": f"Bearer {live_tenant.tokens['viewer']}"}
    for _ in range(30):
        assert server.request("GET", "/api/v1/projects", host=live_tenant.host, **auth)[0] == 200
    for _ in range(5):
        assert (
            server.request("GET", "/api/v1/nothing-here", host=live_tenant.host, **auth)[0] == 404
        )
    status, _, _ = server.request("GET", "/metrics")
    assert status == 401
    status, _, body = server.request("GET", "/metrics", Authorization=f"Bearer {METRICS_TOKEN}")
    assert status == 200
    text = body.decode()
    requests = samples(text, "taskflow_http_requests_total")
    projects = [v for k, v in requests.items() if 'route="/api/v1/projects"' in k]
    # 30 requests spread over three processes, all counted by whichever answered the scrape.
    assert sum(projects) == 30
    assert any('isolation="schema"' in k and 'status="2xx"' in k for k in requests)
    assert sum(v for k, v in requests.items() if 'status="4xx"' in k) >= 5
    latency = samples(text, "taskflow_http_request_duration_seconds_count")
    assert sum(v for k, v in latency.items() if 'route="/api/v1/projects"' in k) == 30
    resolutions = samples(text, "taskflow_tenant_resolutions_total")
    assert resolutions['taskflow_tenant_resolutions_total{outcome="hit"}'] >= 30
    assert samples(text, "taskflow_principal_cache_lookups_total")
    assert "taskflow_db_pool_connections_in_use" in text
    assert re.search(r'taskflow_celery_queue_length\{queue="imports"\} \d', text)


def test_rate_limits_failing_open_are_counted_when_redis_stops(
    gunicorn: Any, live_tenant: TenantFixture, committed: None, tmp_path: Any
) -> None:
    """A real server whose Redis (a private one) is stopped: every request still answers, and
    /metrics says how many limit checks let one in unchecked, and why."""
    redis, url = start_redis(tmp_path)
    try:
        server = gunicorn(
            workers=1,  # one process, one circuit breaker: the reasons are exact
            METRICS_TOKEN=METRICS_TOKEN,
            REDIS_URL=url,
            CELERY_BROKER_URL=url,
            CELERY_RESULT_BACKEND=url,
            CACHE_BREAKER_COOLDOWN_SECONDS="600",  # never probes Redis again during the test
        )
        auth = {"Authorization": f"Bearer {live_tenant.tokens['viewer']}"}
        for _ in range(3):
            assert (
                server.request("GET", "/api/v1/projects", host=live_tenant.host, **auth)[0] == 200
            )
        before = samples(scrape(server), "taskflow_rate_limit_fail_open_total")
        assert sum(before.values()) == 0  # Redis answered every check
        stop_process(redis)
        for _ in range(10):
            status, _, body = server.request(
                "GET", "/api/v1/projects", host=live_tenant.host, **auth
            )
            assert status == 200, body
    finally:
        stop_process(redis)
    counted = samples(scrape(server), "taskflow_rate_limit_fail_open_total")
    # The first Redis call that fails (a cache read: tenant or principal) trips the breaker, so
    # no limit check waits on Redis: each is counted `breaker_open`. A request makes two: its
    # address's failure budget (the principal cache is unreachable, so the token is looked up in
    # the database, and that lookup is guarded) and its tenant's and token's limits.
    assert counted == {'taskflow_rate_limit_fail_open_total{reason="breaker_open"}': 20.0}, counted


def scrape(server: Any) -> str:
    status, _, body = server.request("GET", "/metrics", Authorization=f"Bearer {METRICS_TOKEN}")
    assert status == 200, body
    return str(body.decode())


@pytest.mark.worker
def test_a_worker_serves_its_pool_processes_metrics_on_its_own_port(
    tmp_path: Any, committed: None
) -> None:
    port = free_port()
    folder = tmp_path / "worker-metrics"
    folder.mkdir()
    (folder / "counter_999999.db").write_bytes(b"")  # a previous run's leftover: cleared at start
    queue = f"metrics-{uuid.uuid4().hex[:8]}"  # this worker's alone: the session's may be running
    worker = WorkerProcess(
        "metrics",
        queues=queue,
        concurrency=2,
        env={
            "PROMETHEUS_MULTIPROC_DIR": str(folder),
            "METRICS_TOKEN": METRICS_TOKEN,
            "WORKER_METRICS_PORT": str(port),
        },
    ).start()
    try:
        results = [
            celery_app.send_task(
                "control_plane.tasks.ping", args=[f"p{i}"], queue=queue, routing_key=queue
            )
            for i in range(12)
        ]
        for result in results:
            result.get(timeout=30)
        url = f"http://127.0.0.1:{port}/metrics"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 401
        request = urllib.request.Request(url, headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
        deadline = time.monotonic() + 10
        while True:  # postrun signals run just after the result is stored
            text = urllib.request.urlopen(request, timeout=5).read().decode()  # noqa: S310
            done = samples(text, "taskflow_celery_tasks_total").get(
                f'taskflow_celery_tasks_total{{outcome="success",queue="{queue}"}}', 0
            )
            if done >= 12 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert done == 12  # by two pool processes, added up
        assert samples(text, "taskflow_celery_task_run_seconds_count")
        assert samples(text, "taskflow_celery_task_queue_wait_seconds_count")
        assert not (folder / "counter_999999.db").exists()
    finally:
        worker.stop()


def test_the_dashboard_plots_only_metrics_the_platform_exports() -> None:
    dashboard = json.loads(
        (ROOT / "platform/observability/grafana/dashboards/taskflow.json").read_text()
    )
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"taskflow_\w+", target["expr"])
    }
    exported = {"taskflow_celery_queue_length"}  # read at scrape time (exposition.QueueDepth)
    for family in REGISTRY.collect():  # labelled families have no sample before their first
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}
        exported |= {family.name + s for s in suffixes.get(family.type, [""])}
    assert used - exported == set()


def _latency_buckets(route: str) -> dict[str, float]:
    return {
        s.labels["le"]: s.value
        for family in REGISTRY.collect()
        if family.name == "taskflow_http_request_duration_seconds"
        for s in family.samples
        if s.name.endswith("_bucket") and s.labels["route"] == route
    }


def test_a_request_is_recorded_as_counter_inc_and_histogram_observe_record_it() -> None:
    """observe_request writes the series' values itself (not through inc/observe): each value
    lands where Histogram.observe puts it, a bound's own value in that bound's bucket."""
    route = f"/recorded-{time.monotonic_ns()}"
    observed = [0.005, 0.0051, 0.0, 2.5, 10.0, 10.5, 0.3]
    for seconds in observed:
        metrics.observe_request(
            route=route, method="GET", status=201, isolation="schema", tenant="x", seconds=seconds
        )
    buckets = _latency_buckets(route)
    expected = {
        "0.005": 2, "0.01": 3, "0.025": 3, "0.05": 3, "0.1": 3, "0.25": 3, "0.5": 4, "1.0": 4,
        "2.5": 5, "5.0": 5, "10.0": 6, "+Inf": 7,
    }  # fmt: skip
    assert buckets == expected
    labels = {"route": route, "method": "GET", "isolation": "schema"}
    assert REGISTRY.get_sample_value(
        "taskflow_http_request_duration_seconds_sum", labels
    ) == pytest.approx(sum(observed))
    assert REGISTRY.get_sample_value("taskflow_http_request_duration_seconds_count", labels) == 7
    requests = [
        s
        for family in REGISTRY.collect()
        if family.name == "taskflow_http_requests"
        for s in family.samples
        if s.name.endswith("_total") and s.labels["route"] == route
    ]
    assert [(s.labels["status"], s.value) for s in requests] == [("2xx", 7)]


def test_principal_cache_lookups_are_counted_by_outcome() -> None:
    def count(outcome: str) -> float:
        value = REGISTRY.get_sample_value(
            "taskflow_principal_cache_lookups_total", {"outcome": outcome}
        )
        return value or 0.0

    hits, misses = count("hit"), count("miss")
    with override_settings(METRICS_ENABLED=True):
        metrics.count_principal_lookup(True)
        metrics.count_principal_lookup(True)
        metrics.count_principal_lookup(False)
    with override_settings(METRICS_ENABLED=False):
        metrics.count_principal_lookup(True)
    assert (count("hit") - hits, count("miss") - misses) == (2, 1)

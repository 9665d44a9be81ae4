"""The request id: kept when well-formed, else made; echoed on every response, errors included;
carried in a task's message to the worker's log lines."""

from __future__ import annotations

import re
import time
import uuid

import pytest
from django.test import Client

from control_plane.celery import app as celery_app
from control_plane.observability import request_ids
from control_plane.observability.worker_signals import stamp
from tests.conftest import WorkerProcess
from tests.control_plane.observability.conftest import json_lines

pytestmark = pytest.mark.django_db
GENERATED = re.compile(r"[0-9a-f]{32}")


def test_a_well_formed_request_id_is_kept_and_echoed() -> None:
    response = Client(HTTP_HOST="localhost").get("/healthz", headers={"X-Request-ID": "abc-1.2_3"})
    assert response.status_code == 200
    assert response["X-Request-ID"] == "abc-1.2_3"


@pytest.mark.parametrize(
    "supplied", ["", "has space", "x" * 65, "semi;colon", "new\u00e9", "<script>"]
)
def test_a_malformed_request_id_is_replaced_by_a_new_one(supplied: str) -> None:
    response = Client(HTTP_HOST="localhost").get("/healthz", headers={"X-Request-ID": supplied})
    assert GENERATED.fullmatch(response["X-Request-ID"])


def test_problem_responses_carry_the_request_id() -> None:
    sent = {"X-Request-ID": "err-1"}
    unknown_host = Client(HTTP_HOST="nobody.localhost").get("/api/v1/tasks", headers=sent)
    assert unknown_host.status_code == 404
    nul = Client(HTTP_HOST="localhost").get("/ops/v1/tenants?q=%00", headers=sent)
    assert nul.status_code == 400
    unauthenticated = Client(HTTP_HOST="localhost").get("/ops/v1/tenants", headers=sent)
    assert unauthenticated.status_code == 401
    for response in (unknown_host, nul, unauthenticated):
        assert response["Content-Type"].startswith("application/problem+json")
        assert response["X-Request-ID"] == "err-1"
    generated = Client(HTTP_HOST="nobody.localhost").get("/x")
    assert GENERATED.fullmatch(generated["X-Request-ID"])


def test_a_message_sent_during_a_request_carries_its_id() -> None:
    token = request_ids.enter("req-77")
    try:
        headers: dict[str, object] = {}
        stamp(headers=headers)
    finally:
        request_ids.leave(token)
    assert headers["request_id"] == "req-77"
    assert isinstance(headers["published_at"], float)
    outside: dict[str, object] = {}
    stamp(headers=outside)
    assert "request_id" not in outside


@pytest.mark.worker
def test_a_task_logs_with_the_request_id_that_sent_it(committed: None) -> None:
    queue = f"rid-{uuid.uuid4().hex[:8]}"
    worker = WorkerProcess("rid", queues=queue, concurrency=1, env={"LOG_FORMAT": "json"}).start()
    try:
        token = request_ids.enter("req-from-web-42")
        try:
            result = celery_app.send_task(
                "control_plane.tasks.ping", args=["x"], queue=queue, routing_key=queue
            )
        finally:
            request_ids.leave(token)
        result.get(timeout=30)
        deadline = time.monotonic() + 10
        while "task finished" not in worker.log_path.read_text() and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        worker.stop()
    lines = [
        line for line in json_lines(worker.log_path.read_text()) if line["event"] == "task finished"
    ]
    assert lines, worker.log_path.read_text()
    assert lines[0]["request_id"] == "req-from-web-42"
    assert lines[0]["task"] == "control_plane.tasks.ping"
    assert lines[0]["queue"] == queue

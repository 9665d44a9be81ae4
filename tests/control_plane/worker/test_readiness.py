"""/readyz and the admin tell an operator when a queue has no worker: a count for anyone, the
queue names behind the admin's login; with the session's real worker, made to stop consuming
`imports` for real (cancel_consumer)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from control_plane.celery import app as celery_app
from control_plane.worker import readiness

pytestmark = [pytest.mark.worker, pytest.mark.django_db]


@pytest.fixture
def fresh_answer() -> Iterator[None]:
    readiness.forget()
    yield
    readiness.forget()


@pytest.fixture
def imports_unconsumed(celery_worker_process: Any, fresh_answer: None) -> Iterator[str]:
    name = celery_worker_process.name
    celery_app.control.cancel_consumer("imports", destination=[name], reply=True)
    yield name
    celery_app.control.add_consumer("imports", destination=[name], reply=True)


def _queue_warning(client: Client) -> tuple[dict[str, Any], bytes]:
    response = client.get("/readyz", HTTP_HOST="localhost")
    assert response.status_code == 200  # web can serve: a queue without worker only warns
    body = response.json()
    assert body["status"] == "ready"
    return {w["name"]: w for w in body["warnings"]}["queues"], response.content


def test_readyz_counts_queues_without_a_worker_and_names_nothing(
    client: Client, imports_unconsumed: str
) -> None:
    assert readiness.unconsumed_queues(wait=True) == ["imports"]
    warning, content = _queue_warning(client)
    assert warning == {"name": "queues", "ok": False, "detail": "1 queue(s) without a worker"}
    assert b"imports" not in content
    assert imports_unconsumed.split("@")[0].encode() not in content


def test_readyz_is_quiet_when_every_queue_has_a_worker(
    client: Client, celery_worker_process: Any, fresh_answer: None
) -> None:
    assert readiness.unconsumed_queues(wait=True) == []
    warning, _ = _queue_warning(client)
    assert warning["ok"] is True


def test_the_answer_is_cached_not_asked_on_each_probe(
    client: Client, celery_worker_process: Any, fresh_answer: None, monkeypatch: Any
) -> None:
    readiness.unconsumed_queues(wait=True)
    asked: list[float] = []

    def ask(timeout: float) -> dict[str, list[str]]:
        asked.append(timeout)
        return {}

    monkeypatch.setattr(readiness, "consumers_by_queue", ask)
    for _ in range(5):
        _queue_warning(client)
    assert asked == []


def test_the_admin_index_names_the_queue_without_a_worker(
    operator: Client, imports_unconsumed: str
) -> None:
    page = operator.get("/admin/", HTTP_HOST="localhost")
    assert page.status_code == 200
    assert b"No worker consumes imports" in page.content

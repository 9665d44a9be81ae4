"""A fresh server asked for both API descriptions at once, from many threads: every answer is
the whole, right document (tenants.openapi_view). drf-spectacular alone answered 500 to the
second of two first requests in one process, and swaps its settings process-wide per request."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.contract.conftest import PUBLIC_HOST
from tests.processes import start_gunicorn, stop_process
from tests.taskflow.conftest import TenantFixture

CLIENTS_PER_DOCUMENT = 4


def test_concurrent_first_requests_for_both_documents_get_each_its_own(
    contract_tenants: dict[str, TenantFixture], staff_token: str, tmp_path: Path
) -> None:
    # One worker of many threads, no document generated yet: the first requests race.
    server = start_gunicorn(tmp_path, workers=1, threads=2 * CLIENTS_PER_DOCUMENT)
    tenant_host = contract_tenants["schema"].host
    asked: list[tuple[str, str, dict[str, str]]] = [
        ("/api/v1/schema", tenant_host, {})
    ] * CLIENTS_PER_DOCUMENT + [
        ("/ops/v1/schema", PUBLIC_HOST, {"Authorization": f"Bearer {staff_token}"})
    ] * CLIENTS_PER_DOCUMENT
    start = threading.Barrier(len(asked))

    def fetch(path: str, host: str, headers: dict[str, str]) -> tuple[str, int, bytes]:
        start.wait()
        status, _, body = server.request(
            "GET", path, host, None, Accept="application/vnd.oai.openapi+json", **headers
        )
        return path, status, body

    try:
        with ThreadPoolExecutor(len(asked)) as pool:
            answers = list(pool.map(lambda args: fetch(*args), asked))
    finally:
        stop_process(server.process)

    assert [status for _, status, _ in answers] == [200] * len(asked), answers
    documents: dict[str, set[bytes]] = {}
    for path, _, body in answers:
        documents.setdefault(path, set()).add(body)
    assert {path: len(bodies) for path, bodies in documents.items()} == {
        "/api/v1/schema": 1,
        "/ops/v1/schema": 1,
    }
    tenant = json.loads(documents["/api/v1/schema"].pop())
    ops = json.loads(documents["/ops/v1/schema"].pop())
    assert any(path.startswith("/api/v1/tasks") for path in tenant["paths"])
    assert not any(path.startswith("/ops/") for path in tenant["paths"])
    assert any(path.startswith("/ops/v1/") for path in ops["paths"])
    assert not any(path.startswith("/api/v1/") for path in ops["paths"])
    assert tenant["info"]["title"] != ops["info"]["title"]  # each its own settings

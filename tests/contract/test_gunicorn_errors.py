"""Requests gunicorn refuses before Django sees them still answer application/problem+json.

gunicorn parses the request line and header fields itself; over its limits (4,094 bytes of request
line, 100 header fields, 8,190 bytes per field) or on a malformed request, its worker writes the
error. The platform's worker (platform/gunicorn.conf.py) writes a problem instead of gunicorn's
HTML page, on every host, with a request id like any other response.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from tests.contract.conftest import PUBLIC_HOST
from tests.processes import Gunicorn
from tests.taskflow.conftest import TenantFixture


def raw_exchange(server: Gunicorn, request: bytes) -> tuple[int, dict[str, str], Any]:
    """Send bytes as they are (no client library tidies them) and read the whole answer."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *fields = head.decode("latin-1").split("\r\n")
    headers = {}
    for field in fields:
        name, _, value = field.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, json.loads(body)


def request_bytes(
    host: str, target: str = "/api/v1/tasks", method: str = "GET", **fields: str
) -> bytes:
    lines = [
        f"{method} {target} HTTP/1.1",
        f"Host: {host}",
        *(f"{k}: {v}" for k, v in fields.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@pytest.fixture(params=["public", "tenant"])
def host(request: pytest.FixtureRequest, contract_tenants: dict[str, TenantFixture]) -> str:
    return PUBLIC_HOST if request.param == "public" else contract_tenants["schema"].host


def assert_problem(answer: tuple[int, dict[str, str], Any], status: int) -> dict[str, Any]:
    got, headers, body = answer
    assert got == status, body
    assert headers["content-type"] == "application/problem+json"
    assert headers["x-request-id"]
    assert body["status"] == status
    assert body["title"]
    assert "<html" not in json.dumps(body)
    return body


def test_a_request_line_over_gunicorns_limit_is_a_problem(api_server: Gunicorn, host: str) -> None:
    target = "/api/v1/tasks?q=" + "a" * 5000
    body = assert_problem(raw_exchange(api_server, request_bytes(host, target)), 400)
    assert "Request Line is too large" in body["detail"]


def test_too_many_header_fields_are_a_problem(api_server: Gunicorn, host: str) -> None:
    fields = {f"X-Filler-{n}": "x" for n in range(120)}
    answer = raw_exchange(api_server, request_bytes(host, **fields))
    body = assert_problem(answer, 431)
    assert "header" in body["detail"].lower()


def test_a_header_field_over_gunicorns_limit_is_a_problem(api_server: Gunicorn, host: str) -> None:
    answer = raw_exchange(api_server, request_bytes(host, **{"X-Filler": "x" * 9000}))
    assert_problem(answer, 431)


def test_an_unparsable_header_field_is_a_problem(api_server: Gunicorn, host: str) -> None:
    answer = raw_exchange(api_server, request_bytes(host, **{"Bad Name": "x"}))
    assert_problem(answer, 400)


def test_a_refused_request_keeps_the_callers_well_formed_request_id(
    api_server: Gunicorn, host: str
) -> None:
    """Framing gunicorn will not trust (chunked twice): refused after the fields were read."""
    fields = {"X-Request-ID": "refused-7", "Transfer-Encoding": "chunked, chunked"}
    answer = raw_exchange(api_server, request_bytes(host, "/api/v1/tasks", "POST", **fields))
    assert_problem(answer, 400)
    assert answer[1]["x-request-id"] == "refused-7"


def test_the_server_logs_gunicorns_own_line_for_a_refused_request(api_server: Gunicorn) -> None:
    raw_exchange(api_server, request_bytes(PUBLIC_HOST, "/" + "b" * 5000))
    assert "Invalid request from ip=127.0.0.1" in api_server.stderr.read_text()

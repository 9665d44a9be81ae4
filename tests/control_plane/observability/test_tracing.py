"""OpenTelemetry: off by default; when on, a request is one trace from Django down to its SQL,
and its log lines carry the trace id."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.conftest import WorkerProcess, nobody_else_consumes
from tests.control_plane.observability.conftest import json_lines
from tests.imports.conftest import csv_bytes, generated_rows
from tests.taskflow.conftest import TenantFixture


def spans_in(text: str) -> list[dict[str, Any]]:
    """The console exporter's output: JSON objects one after another."""
    decoder, spans, at = json.JSONDecoder(), [], 0
    while (start := text.find("{", at)) != -1:
        try:
            span, at = decoder.raw_decode(text, start)
        except ValueError:  # a brace in a log line
            at = start + 1
            continue
        if isinstance(span, dict):
            spans.append(span)
    return spans


def test_a_request_is_one_trace_down_to_its_sql(
    gunicorn: Any, live_tenant: TenantFixture, committed: None
) -> None:
    server = gunicorn(workers=1, TRACING_EXPORTER="console", LOG_FORMAT="json")
    auth = {"Authorization": f"Bearer {live_tenant.tokens['viewer']}", "X-Request-ID": "traced-1"}
    assert server.request("GET", "/api/v1/projects", host=live_tenant.host, **auth)[0] == 200
    deadline = time.monotonic() + 10
    while server.stdout.read_text().count('"kind": "SpanKind.SERVER"') < 2:  # /healthz's first
        assert time.monotonic() < deadline, server.stderr.read_text()
        time.sleep(0.1)
    spans = spans_in(server.stdout.read_text())
    request = next(
        s
        for s in spans
        if s["kind"] == "SpanKind.SERVER" and "/api/v1/projects" in json.dumps(s["attributes"])
    )
    trace_id = request["context"]["trace_id"]
    sql = [
        s
        for s in spans
        if s["context"]["trace_id"] == trace_id and s["attributes"].get("db.system") == "postgresql"
    ]
    assert sql, [(s["name"], s["attributes"]) for s in spans]
    assert any("projects" in str(s["attributes"].get("db.statement", "")) for s in sql)
    line = next(
        line
        for line in json_lines(server.stderr.read_text())
        if line["event"] == "request" and line.get("request_id") == "traced-1"
    )
    assert line["trace_id"] == trace_id.removeprefix("0x")


def test_tracing_is_off_unless_configured(
    gunicorn: Any, live_tenant: TenantFixture, committed: None
) -> None:
    server = gunicorn(workers=1, LOG_FORMAT="json")
    auth = {"Authorization": f"Bearer {live_tenant.tokens['viewer']}"}
    assert server.request("GET", "/api/v1/projects", host=live_tenant.host, **auth)[0] == 200
    assert "SpanKind" not in server.stdout.read_text()
    assert "trace_id" not in server.stderr.read_text()


@pytest.mark.worker
def test_an_upload_and_the_import_it_queues_are_one_trace(
    gunicorn: Any, live_tenant: TenantFixture, committed: None
) -> None:
    """web -> Celery -> SQL: the worker's task and its statements join the request's trace."""
    with nobody_else_consumes("imports"):  # the session's worker would take the message
        worker = WorkerProcess(
            "traced", queues="imports", concurrency=1, env={"TRACING_EXPORTER": "console"}
        ).start()
        try:
            server = gunicorn(workers=1, TRACING_EXPORTER="console")
            status, _, body = server.request(
                "POST",
                "/api/v1/imports",
                host=live_tenant.host,
                body=csv_bytes(generated_rows(5, "P1")),
                **{
                    "Authorization": f"Bearer {live_tenant.tokens['member']}",
                    "Content-Type": "text/csv",
                },
            )
            assert status == 202, body
            deadline = time.monotonic() + 30
            while "run/control_plane.imports.tasks.run_import" not in worker.log_path.read_text():
                assert time.monotonic() < deadline, worker.log_path.read_text()
                time.sleep(0.2)
            time.sleep(0.5)
        finally:
            worker.stop()
    web = [s for s in spans_in(server.stdout.read_text()) if "context" in s]
    request = next(
        s
        for s in web
        if s["kind"] == "SpanKind.SERVER" and "/api/v1/imports" in json.dumps(s["attributes"])
    )
    trace_id = request["context"]["trace_id"]
    assert any(
        s["name"].startswith("apply_async/") for s in web if s["context"]["trace_id"] == trace_id
    )
    work = [s for s in spans_in(worker.log_path.read_text()) if "context" in s]
    run = next(s for s in work if s["name"] == "run/control_plane.imports.tasks.run_import")
    assert run["context"]["trace_id"] == trace_id
    sql = [
        s
        for s in work
        if s["context"]["trace_id"] == trace_id and s["attributes"].get("db.system") == "postgresql"
    ]
    assert sql

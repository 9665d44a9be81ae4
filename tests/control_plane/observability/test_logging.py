"""Log lines: JSON with the request's context from web and workers, and never a secret."""

from __future__ import annotations

import json
import logging
import logging.config
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from django.conf import settings
from hypothesis import example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from control_plane.observability import logging as observability_logging
from control_plane.observability.logging import (
    ACCESS_LOGGER,
    REDACTED,
    SECRET_KEYS,
    SUSPECT,
    access_line,
    configure_structlog,
    logging_config,
    redact,
)
from tenants.models import Tenant
from tests.conftest import WorkerProcess, nobody_else_consumes
from tests.control_plane.observability.conftest import json_lines
from tests.factories import make_token, make_user, public_tenant
from tests.taskflow.conftest import TenantFixture, discard


def test_redact_removes_tokens_and_secret_fields_from_any_line() -> None:
    token = "tf_0123abcd_" + "s3cr3t-Body_" * 3
    event = redact(
        None,
        "info",
        {
            "event": f"calling with {token} and Authorization: Bearer abc.def.ghi",
            "password": "hunter2",
            "headers": {"Authorization": "Bearer xyz", "Accept": "text/csv"},
            "args": [f"token={token}"],
        },
    )
    text = json.dumps(event)
    assert "s3cr3t" not in text
    for secret in ("abc.def.ghi", "xyz", "hunter2"):
        assert secret not in text
    assert "tf_0123abcd_" + REDACTED in event["event"]
    assert event["headers"]["Accept"] == "text/csv"


@pytest.fixture
def settings_logging_after() -> Iterator[None]:
    """Put the settings' logging back once capsys has given the real stderr back: configured
    while capsys holds it, structlog would keep writing to capsys' closed stream."""
    yield
    structlog.contextvars.clear_contextvars()
    logging.config.dictConfig(settings.LOGGING)
    configure_structlog(log_format=settings.LOG_FORMAT, level=settings.LOG_LEVEL)


def test_json_lines_carry_the_bound_context(settings_logging_after: None, capsys: Any) -> None:
    logging.config.dictConfig(logging_config(log_format="json", level="INFO"))
    configure_structlog(log_format="json", level="INFO")  # onto the captured stderr
    structlog.contextvars.bind_contextvars(request_id="r-1", tenant="acme")
    structlog.get_logger("taskflow.test").info("hello", status=200)
    logging.getLogger("some.library").warning("plain %s", "record")
    lines = json_lines(capsys.readouterr().err)
    mine = next(line for line in lines if line["event"] == "hello")
    assert {"timestamp", "level", "request_id", "tenant", "status"} <= set(mine)
    assert (mine["request_id"], mine["tenant"], mine["level"]) == ("r-1", "acme", "info")
    library = next(line for line in lines if line["event"] == "plain record")
    assert library["request_id"] == "r-1"
    assert library["level"] == "warning"


ACCESS_FIELDS = {
    "method": "GET",
    "route": "/api/v1/tasks",
    "status": 200,
    "duration_ms": 3.25,
    "tenant": "acme",
    "isolation": "schema",
    "user_id": 7,
}


def _access_lines(capsys: Any, fields: dict[str, Any], log_format: str = "json") -> list[Any]:
    """The access line written by access_line and by structlog's processors for `fields`."""
    configure_structlog(log_format=log_format, level="INFO")  # onto the captured stderr
    access_line(fields)
    structlog.get_logger().bind(logger=ACCESS_LOGGER).info("request", **fields)
    return json_lines(capsys.readouterr().err)


def test_the_access_line_is_the_line_structlog_would_write(
    settings_logging_after: None, capsys: Any
) -> None:
    """Its own renderer, the same line: fields, event, bound context (the fields win), level,
    timestamp; a secret in the context (a token as request id, a secret-looking key) redacted."""
    token = "tf_0123abcd_" + "s3cr3t-Body_" * 3
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        request_id=token, tenant="bound-slug", api_key="k-1", note="Bearer abc.def"
    )
    fields = {**ACCESS_FIELDS, "method": f"basic {token}", "password": "hunter2"}
    own, chain = _access_lines(capsys, fields)
    assert own.pop("timestamp").endswith("Z")
    assert chain.pop("timestamp").endswith("Z")
    assert own == chain
    assert (own["event"], own["level"], own["logger"]) == ("request", "info", ACCESS_LOGGER)
    assert own["tenant"] == "acme"  # the field, not the bound value
    assert own["request_id"] == "tf_0123abcd_" + REDACTED
    assert own["api_key"] == REDACTED
    assert own["note"] == "Bearer " + REDACTED
    assert own["password"] == REDACTED
    assert "s3cr3t" not in json.dumps(own)
    assert "hunter2" not in json.dumps(own)


def test_the_access_line_carries_the_trace_id_when_tracing_is_on(
    settings_logging_after: None, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(observability_logging, "_trace_id", lambda: "0af7651916cd43dd")
    structlog.contextvars.clear_contextvars()
    own, chain = _access_lines(capsys, ACCESS_FIELDS)
    assert own["trace_id"] == chain["trace_id"] == "0af7651916cd43dd"


def test_the_access_line_follows_the_level_and_the_console_format(
    settings_logging_after: None, capsys: Any
) -> None:
    configure_structlog(log_format="json", level="WARNING")
    access_line(ACCESS_FIELDS)
    assert capsys.readouterr().err == ""
    configure_structlog(log_format="console", level="INFO")
    access_line(ACCESS_FIELDS)
    console = capsys.readouterr().err
    assert "route=/api/v1/tasks" in console
    assert not console.startswith("{")


def test_no_access_field_name_looks_like_a_secret() -> None:
    """access_line redacts the middleware's fields by value only: their names must stay clear."""
    for name in (*ACCESS_FIELDS, "logger", "event", "level", "timestamp", "trace_id"):
        assert SECRET_KEYS.search(name) is None


@hypothesis_settings(max_examples=300)
@given(
    st.text(alphabet=st.sampled_from("tfTF_bBeEaArRsSiIcCoOkKnN xyz-1\u017f\u212a\u0130"))
    | st.text()
)
@example("Authorization: BASIC dXNlcg==")
@example("a ToKeN here")
@example("TF_0123abcd_x")
@example("bEaReR")
@example("ba\u017fic x")  # a long s: IGNORECASE matches it as s, lower() does not
@example("\u212aen tokens")  # a Kelvin sign, then "token"
@example("GET /api/v1/tasks?limit=50")
def test_the_cheap_suspect_check_finds_what_the_regex_finds(text: str) -> None:
    assert observability_logging._suspect(text) == (SUSPECT.search(text) is not None)


@pytest.fixture
def default_queue_is_ours() -> Iterator[None]:
    """This test's worker must be the one that provisions: the test reads that worker's log."""
    with nobody_else_consumes("default"):
        yield


@pytest.mark.worker
@pytest.mark.usefixtures("default_queue_is_ours")
def test_no_token_reaches_a_log_line_of_web_or_worker(gunicorn: Any, committed: None) -> None:
    staff = make_user(f"log-staff-{uuid.uuid4().hex[:8]}@example.com", staff=True)
    staff_token = make_token(staff, public_tenant())
    worker = WorkerProcess("logs", queues="default", concurrency=1, env={"LOG_FORMAT": "json"})
    worker.start()
    server = gunicorn(workers=1, LOG_FORMAT="json")
    slug = f"logs{uuid.uuid4().hex[:8]}"
    ops = {"Authorization": f"Bearer {staff_token}", "Content-Type": "application/json"}
    try:
        body = json.dumps(
            {
                "name": "Logs",
                "slug": slug,
                "domain": f"{slug}.localhost",
                "isolation": "rls",
                "owner_email": f"o-{slug}@example.com",
            }
        )
        status, headers, answer = _post(server, "/ops/v1/tenants", body, ops)
        assert status == 202, answer
        owner_token = json.loads(answer)["owner_token"]
        deadline = time.monotonic() + 60
        while Tenant.objects.get(slug=slug).status != "active":
            assert time.monotonic() < deadline, "onboarding did not finish"
            time.sleep(0.2)
        host = f"{slug}.localhost"
        owner = {"Authorization": f"Bearer {owner_token}", "X-Request-ID": "log-test-1"}
        assert server.request("GET", "/api/v1/projects", host=host, **owner)[0] == 200
        bad = "tf_deadbeef_" + "NotARealTokenButSecret0"
        assert (
            server.request("GET", "/api/v1/projects", host=host, Authorization=f"Bearer {bad}")[0]
            == 401
        )
        time.sleep(0.5)  # the worker's last lines
    finally:
        worker.stop()
        discard(TenantFixture(tenant=Tenant.objects.get(slug=slug), host=""))
        staff.delete()
    web = server.stderr.read_text()
    work = worker.log_path.read_text()
    # The secret is everything after "tf_<prefix>_" (it may itself contain "_").
    for secret in (owner_token, staff_token, bad, owner_token.split("_", 2)[2]):
        assert secret not in web
        assert secret not in work
    requests = [line for line in json_lines(web) if line["event"] == "request"]
    mine = next(line for line in requests if line.get("request_id") == "log-test-1")
    assert mine["route"] == "/api/v1/projects"
    assert (mine["status"], mine["tenant"], mine["isolation"]) == (200, slug, "rls")
    assert isinstance(mine["user_id"], int)
    assert mine["duration_ms"] > 0
    assert {"timestamp", "level", "method"} <= set(mine)
    tasks = [line for line in json_lines(work) if line["event"] == "task finished"]
    assert any(line.get("request_id") == headers["x-request-id"] for line in tasks), work


def _post(server: Any, path: str, body: str, headers: dict[str, str]) -> Any:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("POST", path, body=body, headers={"Host": "localhost", **headers})
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()

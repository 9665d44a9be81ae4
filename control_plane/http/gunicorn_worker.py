"""gunicorn's gthread worker, answering the errors gunicorn raises itself as problem+json.

A request gunicorn cannot parse (a request line over `limit_request_line`, too many or too large
header fields, an invalid method or header...) never reaches Django: the worker's `handle_error`
writes gunicorn's own HTML page. This subclass lets gunicorn decide everything it decides there
(the status, its log line and access line) against a stand-in socket, keeps only the status
line, and sends the client an RFC 9457 body with a request id instead.

Selected in platform/gunicorn.conf.py. Imported by gunicorn's master when it reads the setting,
before any worker loads the application: nothing here may import Django or prometheus_client at
module level.
"""

from __future__ import annotations

import json
import re
import uuid
from typing import Any

from gunicorn import util  # type: ignore[import-untyped]  # no stubs
from gunicorn.workers.gthread import ThreadWorker  # type: ignore[import-untyped]

PROBLEM_CONTENT_TYPE = "application/problem+json"  # tenants.problems' (not imported: Django)
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")  # tenants.binding's, for the same reason
STATUS_LINE = re.compile(rb"^HTTP/1\.[01] (\d{3}) ([^\r\n]*)")


class _Written:
    """Stands in for the client's socket while gunicorn's handle_error writes its HTML page."""

    def __init__(self) -> None:
        self.data = b""

    def gettimeout(self) -> float:
        return 0.0

    def setblocking(self, flag: bool) -> None:
        pass

    def sendall(self, data: bytes) -> None:
        self.data += data


def problem_page(status: int, title: str, detail: str, request_id: str) -> bytes:
    """A whole HTTP/1.1 response: the problem body, its request id, and the connection closed."""
    body = json.dumps(
        {"type": "about:blank", "title": title, "status": status, "detail": detail}
    ).encode()
    head = (
        f"HTTP/1.1 {status} {title}\r\n"
        "Connection: close\r\n"
        f"Content-Type: {PROBLEM_CONTENT_TYPE}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"X-Request-ID: {request_id}\r\n"
        "\r\n"
    )
    return head.encode("latin-1") + body


def request_id_of(req: Any) -> str:
    """The caller's X-Request-ID when gunicorn parsed one and it is well-formed, else a new id."""
    for name, value in getattr(req, "headers", None) or ():
        if name == "X-REQUEST-ID" and REQUEST_ID.match(value):
            return str(value)
    return uuid.uuid4().hex


class ProblemThreadWorker(ThreadWorker):
    def handle_error(self, req: Any, client: Any, addr: Any, exc: BaseException) -> None:
        written = _Written()
        super().handle_error(req, written, addr, exc)  # gunicorn's status, log and access lines
        match = STATUS_LINE.match(written.data)
        status, title = (int(match[1]), match[2].decode("latin-1")) if match else (500, "")
        if status >= 500:  # gunicorn has logged the traceback; the client learns nothing of it
            title, detail = title or "Internal Server Error", "The error has been logged."
        else:
            detail = str(exc) or title
        try:
            request_id = request_id_of(req or getattr(exc, "req", None))
            util.write_nonblock(client, problem_page(status, title, detail, request_id))
        except Exception:
            self.log.debug("Failed to send error message.")

"""Replaying an import by its Idempotency-Key never reads the body: the file is not uploaded again."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import pytest

from tests.imports.conftest import ImportTenant, csv_bytes, generated_rows

pytestmark = pytest.mark.worker


class UnreadableBody:
    """A request body that fails the request if anything reads it."""

    def read(self, *args: Any) -> bytes:
        raise AssertionError("the body of a replay was read")

    readline = read


def replay(tenant: ImportTenant, size: int, key: str, **headers: str) -> Any:
    environ: dict[str, Any] = {
        "wsgi.input": UnreadableBody(),
        "CONTENT_LENGTH": str(size),
        "CONTENT_TYPE": "text/csv",
    }
    client: Any = tenant.client()
    return client.generic(
        "POST",
        "/api/v1/imports",
        b"",
        content_type="text/csv",
        headers={"Idempotency-Key": key, **headers},
        **environ,
    )


def content_digest(body: bytes) -> str:
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


def test_a_replay_is_answered_without_reading_the_body(
    import_tenant: ImportTenant, worker: object
) -> None:
    body = csv_bytes(generated_rows(3, "P1"))
    first = import_tenant.upload(body, key="replay-key")
    assert first.status_code == 202
    again = replay(import_tenant, len(body), "replay-key")
    assert again.status_code == 202, again.content
    assert again.json()["id"] == first.json()["id"]
    assert again["Idempotent-Replayed"] == "true"
    by_digest = replay(import_tenant, len(body), "replay-key", Content_Digest=content_digest(body))
    assert by_digest.status_code == 202
    import_tenant.wait(first.json()["id"])


def test_a_reused_key_for_another_file_is_409_without_reading_the_body(
    import_tenant: ImportTenant, worker: object
) -> None:
    body = csv_bytes(generated_rows(3, "P1"))
    assert import_tenant.upload(body, key="reused-key").status_code == 202
    assert replay(import_tenant, len(body) + 1, "reused-key").status_code == 409
    other = content_digest(body + b"x")
    assert replay(import_tenant, len(body), "reused-key", Content_Digest=other).status_code == 409

"""A live API for the contract tests: a gunicorn process on this session's database and Redis,
a schema-mode and an rls-mode tenant with member tokens, and a staff token for the operator API.

Rows the server writes are committed; the tenants (and any the operator fuzzing onboards) are
dropped at the end of the session.
"""

from __future__ import annotations

import http.client
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from django.db.models import Max

from control_plane.fanout.models import MigrationRun
from tenants.models import Isolation, Tenant
from tenants.resolution import forget_tenant
from tests.conftest import ROOT
from tests.factories import make_token, make_user, public_tenant
from tests.processes import free_port, stop_process
from tests.taskflow.conftest import TenantFixture, discard, provisioned_tenant

PUBLIC_HOST = "localhost"


@dataclass(frozen=True)
class LiveServer:
    """A gunicorn process on 127.0.0.1; hosts are chosen with the Host header (`*.localhost`
    does not resolve in Python)."""

    port: int
    log: Path

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def request(
        self, method: str, path: str, host: str, body: bytes | None = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers={"Host": host, **headers})
            response = conn.getresponse()
            return (
                response.status,
                {k.lower(): v for k, v in response.getheaders()},
                response.read(),
            )
        finally:
            conn.close()


def _wait_until_serving(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early:\n{log.read_text()}")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
        try:
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.2)
        finally:
            conn.close()
    raise RuntimeError(f"gunicorn did not answer within 60 s:\n{log.read_text()}")


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """gunicorn with DEBUG off and its configuration file, as deployments run it, on this
    session's database and Redis."""
    log = tmp_path_factory.mktemp("contract") / "gunicorn.log"
    port = free_port()
    env = os.environ | {"DEBUG": "false", "PYTHONUNBUFFERED": "1"}
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "control_plane.wsgi:application",
                "-c", "platform/gunicorn.conf.py",
                "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "4",
                "--timeout", "120",
            ],
            cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        _wait_until_serving(process, port, log)
        yield LiveServer(port=port, log=log)
    finally:
        stop_process(process)


@pytest.fixture(scope="session")
def contract_tenants(django_db_blocker: Any) -> Iterator[dict[str, TenantFixture]]:
    """One tenant per isolation mode, each with a token per role, committed for the server."""
    with django_db_blocker.unblock():
        tenants = {
            "schema": provisioned_tenant(Isolation.SCHEMA),
            "rls": provisioned_tenant(Isolation.RLS),
        }
    yield tenants
    with django_db_blocker.unblock():
        for fixture in tenants.values():
            discard(fixture)


@pytest.fixture(scope="session")
def staff_token(django_db_blocker: Any) -> Iterator[str]:
    """A staff user's token on the public host, for the operator API.

    The operator fuzzing acts on whatever it finds: at the end, tenants it onboarded are dropped,
    migration runs it started are deleted, and the tenants that were there before get their
    status and API version back (and their cached resolution forgotten).
    """
    with django_db_blocker.unblock():
        before = {t.pk: (t.status, t.api_version) for t in Tenant.objects.all()}
        last_run = MigrationRun.objects.aggregate(last=Max("pk"))["last"] or 0
        user = make_user(f"contract-staff-{uuid.uuid4().hex[:8]}@example.com", staff=True)
        token = make_token(user, public_tenant())
    yield token
    with django_db_blocker.unblock():
        MigrationRun.objects.filter(pk__gt=last_run).delete()
        for tenant in Tenant.objects.all():
            if tenant.pk not in before:
                discard(TenantFixture(tenant=tenant, host=""))
            elif (tenant.status, tenant.api_version) != before[tenant.pk]:
                status, api_version = before[tenant.pk]
                Tenant.objects.filter(pk=tenant.pk).update(status=status, api_version=api_version)
                forget_tenant(tenant)
        user.delete()

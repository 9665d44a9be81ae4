"""A production web process serves the admin's, the fan-out run page's and Swagger UI's static
files itself: gunicorn with DEBUG off after `collectstatic`, as the container image runs it."""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.processes import Gunicorn, start_gunicorn, stop_process

# Static name -> the content type it must be served with.
ASSETS = {
    "admin/css/base.css": "text/css",
    "fanout/run_page.js": "text/javascript",  # control_plane/fanout/static/
    "control_plane/tenant_status.js": "text/javascript",  # the admin's live tenant status
    "drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js": "text/javascript",
}
# A host no tenant has: static files are served before tenant resolution, on every host.
UNKNOWN_HOST = "no-such-tenant.localhost"


@dataclass
class ProductionServer:
    server: Gunicorn
    static_root: Path

    def get(
        self, path: str, host: str = UNKNOWN_HOST, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        return self.server.request("GET", path, host, None, **headers)

    def hashed_name(self, name: str) -> str:
        manifest = json.loads((self.static_root / "staticfiles.json").read_text())
        return str(manifest["paths"][name])


def production_environment(static_root: Path) -> dict[str, str]:
    """This session's database and Redis, with the settings a deployment runs with."""
    return os.environ | {
        "DJANGO_ENV": "production",
        "DEBUG": "false",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "STATIC_ROOT": str(static_root),
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionServer]:
    tmp = tmp_path_factory.mktemp("production")
    static_root = tmp / "static"
    env = production_environment(static_root)
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
        cwd=ROOT, env=env, check=True,
    )  # fmt: skip
    server = start_gunicorn(tmp, workers=1, threads=4, env=env)
    try:
        yield ProductionServer(server=server, static_root=static_root)
    finally:
        stop_process(server.process)


@pytest.mark.parametrize("name", ASSETS)
def test_production_serves_each_static_file_on_any_host(
    server: ProductionServer, name: str
) -> None:
    status, headers, body = server.get(f"/static/{name}")
    assert status == 200
    assert headers["content-type"].split(";")[0] == ASSETS[name]
    assert body == (server.static_root / name).read_bytes()


@pytest.mark.parametrize("name", ASSETS)
def test_hashed_names_resolve_compressed_and_cached_for_good(
    server: ProductionServer, name: str
) -> None:
    hashed = server.hashed_name(name)
    assert re.search(r"\.[0-9a-f]{12}\.", hashed), hashed
    status, headers, body = server.get(f"/static/{hashed}", **{"Accept-Encoding": "gzip"})
    assert status == 200
    assert headers["content-type"].split(";")[0] == ASSETS[name]
    assert headers["content-encoding"] == "gzip"
    assert len(body) < (server.static_root / hashed).stat().st_size
    assert "immutable" in headers["cache-control"]


def test_the_unknown_host_is_refused_past_the_static_files(server: ProductionServer) -> None:
    status, headers, _ = server.get("/api/v1/projects")
    assert status == 404
    assert headers["content-type"] == "application/problem+json"


def test_admin_pages_link_the_hashed_stylesheet(server: ProductionServer) -> None:
    status, _, body = server.get("/admin/login/", host="localhost")
    assert status == 200
    css = server.hashed_name("admin/css/base.css")
    assert f'href="/static/{css}"' in body.decode()

"""`manage.py check --deploy` with production settings: only the explained exceptions remain,
and none behind a TLS proxy."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys

from tests.conftest import ROOT

# Without BEHIND_TLS_PROXY the platform serves plain HTTP (compose on localhost): it cannot
# redirect to HTTPS nor send HSTS until something in front of it terminates TLS.
EXPLAINED_WITHOUT_TLS = {
    "security.W004": "HSTS: only behind a TLS proxy (BEHIND_TLS_PROXY=true)",
    "security.W008": "SSL redirect: only behind a TLS proxy (BEHIND_TLS_PROXY=true)",
}


def deploy_check(**env: str) -> set[str]:
    """The ids `check --deploy` reports with production settings and `env`."""
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DEBUG", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "BEHIND_TLS_PROXY"}
    }
    environment |= {"DJANGO_ENV": "production", "SECRET_KEY": secrets.token_urlsafe(48), **env}
    result = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy"],
        cwd=ROOT, env=environment, capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return set(re.findall(r"\(([\w.]+\.[EW]\d+)\)", result.stdout + result.stderr))


def test_production_reports_only_the_explained_exceptions() -> None:
    assert deploy_check() == set(EXPLAINED_WITHOUT_TLS)


def test_production_behind_a_tls_proxy_reports_nothing() -> None:
    assert deploy_check(BEHIND_TLS_PROXY="true") == set()

"""compose.yaml as a user runs it, read as data (no Docker here): pinned images, no demo
account or password default outside the dev profile, a beat healthcheck, the dev script's
PostgreSQL major, TLS settings that follow one switch."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# An exact release: digits and dots, maybe a 'v' before and a variant after (15.20, v1.25.2-p0).
EXACT_TAG = re.compile(r"^v?\d+\.\d+(\.\d+)?(-[\w.]+)?$")
DEFAULTED = re.compile(r"\$\{(\w+):?-[^}]*\}")


def outside_dev_profile() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in SERVICES.items() if "dev" not in s.get("profiles", [])}


def image_tag(image: str) -> tuple[str, str]:
    name, _, tag = image.rpartition(":")
    return name, tag


@pytest.mark.parametrize("name", [n for n, s in SERVICES.items() if "build" not in s])
def test_every_pulled_image_is_pinned_to_an_exact_release(name: str) -> None:
    _, tag = image_tag(SERVICES[name]["image"])
    assert EXACT_TAG.match(tag), f"{name}: {SERVICES[name]['image']}"


def test_the_app_image_builds_from_a_pinned_python() -> None:
    dockerfile = (ROOT / "platform" / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM (\S+)", dockerfile, flags=re.MULTILINE)
    assert re.match(r"^python:3\.11\.\d+-slim-\w+$", base), base


def test_pgbouncer_knows_max_prepared_statements() -> None:
    _, tag = image_tag(SERVICES["pgbouncer"]["image"])
    major, minor = (int(part) for part in tag.lstrip("v").split(".")[:2])
    assert (major, minor) >= (1, 21)
    ini = (ROOT / "platform" / "pgbouncer" / "pgbouncer.ini").read_text()
    assert re.search(r"^max_prepared_statements = [1-9]", ini, flags=re.MULTILINE)


def test_postgres_is_the_major_the_dev_script_runs() -> None:
    """The dev script runs the newest major of the machine's Debian packages."""
    installed = sorted(int(p.name) for p in Path("/usr/lib/postgresql").glob("[0-9]*"))
    assert installed, (
        "the dev script needs Debian's PostgreSQL packages (/usr/lib/postgresql/<major>)"
    )
    _, tag = image_tag(SERVICES["postgres"]["image"])
    assert int(tag.split(".")[0]) == installed[-1]


def test_no_demo_account_nor_password_default_outside_the_dev_profile() -> None:
    production = outside_dev_profile()
    text = yaml.safe_dump(production)
    assert "--demo" not in text
    assert "DEMO_ADMIN_PASSWORD" not in text
    defaulted = {var for var in DEFAULTED.findall(text) if "PASSWORD" in var or "SECRET" in var}
    assert defaulted == set()
    # What the dev profile adds: the demo tenant and its admin, after the real setup.
    (demo,) = (s for s in SERVICES.values() if "dev" in s.get("profiles", []))
    assert "--demo" in demo["command"]
    assert demo["depends_on"]["setup"]["condition"] == "service_completed_successfully"


def test_secret_key_has_no_default() -> None:
    assert SERVICES["web"]["environment"]["SECRET_KEY"] == "${SECRET_KEY:?set SECRET_KEY}"


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in outside_dev_profile().items():
        if service.get("restart") == "no":
            continue  # one-shot jobs
        assert "healthcheck" in service, name


def test_beat_is_healthy_while_its_schedule_file_is_fresh() -> None:
    beat = SERVICES["beat"]
    check = " ".join(beat["healthcheck"]["test"])
    schedule = re.search(r"--schedule (\S+)", beat["command"])
    assert schedule is not None
    assert f"{schedule.group(1)}*" in check
    assert "getmtime" in check


def test_tls_proxy_switch_drives_redirect_hsts_and_secure_cookies() -> None:
    env = SERVICES["web"]["environment"]
    for name in ("BEHIND_TLS_PROXY", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"):
        assert env[name] == "${BEHIND_TLS_PROXY:-false}", name


def test_the_observability_profile_scrapes_web_and_workers_with_the_token() -> None:
    prometheus, grafana = SERVICES["prometheus"], SERVICES["grafana"]
    assert prometheus["profiles"] == grafana["profiles"] == ["observability"]
    assert "metrics_token" in prometheus["secrets"]
    config = yaml.safe_load((ROOT / "platform/observability/prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for job in jobs.values():
        assert job["authorization"]["credentials_file"] == "/run/secrets/metrics_token"
    assert jobs["web"]["static_configs"][0]["targets"] == ["web:8000"]
    worker = SERVICES["worker"]["environment"]
    assert jobs["worker"]["dns_sd_configs"][0]["port"] == int(worker["WORKER_METRICS_PORT"])
    assert worker["METRICS_BIND_ADDRESS"] == "0.0.0.0"  # noqa: S104 - inside the compose network
    # One metrics folder per gunicorn server: the hooks file, in compose and in the image.
    assert "-c platform/gunicorn.conf.py" in SERVICES["web"]["command"]
    assert '"platform/gunicorn.conf.py"' in (ROOT / "platform/Dockerfile").read_text()

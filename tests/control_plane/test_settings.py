"""Production settings refuse to start unsafe; development works with no configuration."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LOAD_SETTINGS = (
    "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
)


def load_settings(**env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if k not in {"SECRET_KEY", "DEBUG", "DJANGO_ENV"}
    }
    environment.update(env)
    return subprocess.run(
        [sys.executable, "-c", LOAD_SETTINGS],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
    )


def test_production_refuses_to_start_without_a_secret_key() -> None:
    result = load_settings(DJANGO_ENV="production")
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_a_development_secret_key() -> None:
    result = load_settings(DJANGO_ENV="production", SECRET_KEY="dev-insecure-" + "x" * 40)
    assert result.returncode != 0
    assert "SECRET_KEY must be set" in result.stderr


def test_production_refuses_debug_on() -> None:
    result = load_settings(DJANGO_ENV="production", SECRET_KEY="k" * 50, DEBUG="true")
    assert result.returncode != 0
    assert "DEBUG must be off" in result.stderr


def test_production_starts_with_a_real_secret_and_debug_off() -> None:
    result = load_settings(DJANGO_ENV="production", SECRET_KEY="k" * 50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_development_generates_a_secret_and_turns_debug_on() -> None:
    result = load_settings(DJANGO_ENV="development")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"

"""The operator CLI: onboard_tenant waits for a real worker; purge_tenant only purges archived."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from control_plane.tenancy.lifecycle import set_tenant_status
from tenants.models import Tenant, TenantStatus
from tests.factories import schema_exists

ROOT = Path(__file__).resolve().parents[3]


def manage(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
    )


def onboard_args(slug: str, **overrides: str) -> list[str]:
    options = {
        "--name": f"CLI {slug}",
        "--domain": f"{slug.replace('_', '-')}.localhost",
        "--isolation": "schema",
        "--owner-email": f"cli-{slug}@example.com",
    }
    options.update(overrides)
    return ["onboard_tenant", slug, *[x for pair in options.items() for x in pair]]


@pytest.mark.worker
def test_onboard_tenant_waits_and_prints_the_token(
    committed, celery_worker_process, unique
) -> None:
    result = manage(*onboard_args(f"cli_{unique}"))
    assert result.returncode == 0, result.stderr
    assert f"tenant:    cli_{unique} (schema, active)" in result.stdout
    assert "token:     tf_" in result.stdout
    assert Tenant.objects.get(slug=f"cli_{unique}").status == TenantStatus.ACTIVE


@pytest.mark.parametrize(
    ("slug", "override", "reason"),
    [
        ("pg_cli", {}, "slug: Slug 'pg_cli' is reserved."),
        ("ok_cli", {"--domain": "no spaces.localhost"}, "domain:"),
        ("ok_cli", {"--owner-email": "nope"}, "owner_email:"),
    ],
)
def test_onboard_tenant_refuses_bad_input_with_the_reason(
    committed, slug, override, reason
) -> None:
    before = Tenant.objects.count()
    result = manage(*onboard_args(slug, **override))
    assert result.returncode != 0
    assert reason in result.stderr
    assert Tenant.objects.count() == before


@pytest.mark.worker
def test_purge_tenant_only_purges_archived_tenants_and_needs_confirmation(
    committed, celery_worker_process, unique
) -> None:
    slug = f"purge_{unique}"
    assert manage(*onboard_args(slug)).returncode == 0
    assert schema_exists(f"t_{slug}")

    refused = manage("purge_tenant", slug, "--confirm", slug)
    assert refused.returncode != 0
    assert "only archived tenants are purged" in refused.stderr
    assert schema_exists(f"t_{slug}")

    set_tenant_status(Tenant.objects.get(slug=slug), TenantStatus.ARCHIVED)
    unconfirmed = manage("purge_tenant", slug, "--confirm", "something_else")
    assert unconfirmed.returncode != 0
    assert schema_exists(f"t_{slug}")

    purged = manage("purge_tenant", slug, "--confirm", slug)
    assert purged.returncode == 0, purged.stderr
    assert not schema_exists(f"t_{slug}")
    assert not Tenant.objects.filter(slug=slug).exists()

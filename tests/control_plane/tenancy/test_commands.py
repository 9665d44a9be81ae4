"""The operator CLI: onboard_tenant waits for a real worker; purge_tenant only purges archived."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tenants.models import Isolation, Tenant, TenantStatus
from tests.conftest import nobody_else_consumes
from tests.factories import make_tenant, schema_exists

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

    archived = manage("archive_tenant", slug, "--reason", "contract ended")
    assert archived.returncode == 0, archived.stderr
    assert archived.stdout.strip() == f"archived tenant {slug} (contract ended)"
    again = manage("archive_tenant", slug)
    assert again.returncode != 0
    assert f"Tenant '{slug}' is archived; it cannot become archived." in again.stderr
    unconfirmed = manage("purge_tenant", slug, "--confirm", "something_else")
    assert unconfirmed.returncode != 0
    assert schema_exists(f"t_{slug}")

    purged = manage("purge_tenant", slug, "--confirm", slug)
    assert purged.returncode == 0, purged.stderr
    assert f"dropped schema t_{slug}" in purged.stdout
    assert "tenant rows: none" in purged.stdout  # nothing was written to it
    assert "tenants.Tenant 1" in purged.stdout
    assert not schema_exists(f"t_{slug}")
    assert not Tenant.objects.filter(slug=slug).exists()


@pytest.fixture
def bare_tenant(committed, unique) -> Iterator[Tenant]:
    """A committed tenant row without storage (rls: no fan-out visits it), removed afterwards."""
    tenant = make_tenant(f"sus_{unique}", isolation=Isolation.RLS)
    yield tenant
    Tenant.objects.filter(pk=tenant.pk).delete()


def test_suspend_tenant_needs_a_reason_and_records_it(bare_tenant: Tenant) -> None:
    tenant = bare_tenant
    missing = manage("suspend_tenant", tenant.slug)
    assert missing.returncode != 0
    assert "--reason" in missing.stderr
    done = manage("suspend_tenant", tenant.slug, "--reason", "unpaid invoice")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"suspended tenant {tenant.slug} (unpaid invoice)"
    tenant.refresh_from_db()
    assert (tenant.status, tenant.status_reason) == ("suspended", "unpaid invoice")
    unknown = manage("suspend_tenant", "no_such_tenant", "--reason", "x")
    assert unknown.returncode != 0
    assert unknown.stderr.strip() == "CommandError: no tenant 'no_such_tenant'"


@pytest.mark.worker
def test_onboard_tenant_prints_the_token_when_its_wait_times_out_and_is_idempotent(
    committed, celery_worker_process, unique
) -> None:
    slug = f"slow_{unique}"
    args = [*onboard_args(slug), "--idempotency-key", f"key-{unique}"]
    with nobody_else_consumes("default"):
        waited = manage(*args, "--timeout", "3")
    assert waited.returncode == 2, waited.stderr
    assert "token:     tf_" in waited.stdout  # shown once: printed before the wait ends badly
    assert "no worker consumes the default queue" in waited.stderr
    assert "Traceback" not in waited.stderr
    # The same key again (the worker is back): the same tenant, provisioned, not a second one.
    again = manage(*args, "--timeout", "60")
    assert again.returncode == 0, again.stderr
    assert f"tenant:    {slug} (schema, active)" in again.stdout
    assert Tenant.objects.filter(slug=slug).count() == 1

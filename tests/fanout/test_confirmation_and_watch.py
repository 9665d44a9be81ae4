"""What the CLI and the admin ask and say before and while a run goes: a downgrade needs a
confirmation (--yes-downgrade, or the admin's confirmation page), and `fanout_migrate --wait`
says when no worker consumes the migrations queue and gives up after --timeout.

No worker consumes the migrations queue here: what these start is cancelled and purged.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from django.contrib.auth.models import User
from django.test import Client

from control_plane.celery import app as celery_app
from control_plane.fanout import runs
from control_plane.fanout.models import MigrationRun, RunStatus
from tests.conftest import nobody_else_consumes
from tests.control_plane.admin_support import HOST, reverse
from tests.migrations_sqla.support import BASE_REVISION, ROOT, TEST_REVISION, set_template

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("committed")]


@pytest.fixture
def operator(client: Client, unique: str) -> Client:
    """A client signed in as a superuser."""
    user = User.objects.create_superuser(f"op_{unique}", f"op_{unique}@example.com", "unused")
    client.force_login(user)
    return client


def fanout_migrate(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "fanout_migrate", *args], cwd=ROOT, env=os.environ.copy(),
        capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def newest_run() -> MigrationRun | None:
    return MigrationRun.objects.order_by("-id").first()


def drop_run(run: MigrationRun | None) -> None:
    if run is not None and not run.is_finished:
        runs.cancel_run(run)
    celery_app.control.purge()


def test_the_cli_refuses_a_downgrade_unless_confirmed(tenants_at_base, script_location) -> None:
    tenants = tenants_at_base(2)
    set_template(script_location, TEST_REVISION)  # the template is above the target
    args = ["--tenants", ",".join(t.slug for t in tenants), "--to", BASE_REVISION]
    args += ["--script-location", script_location]
    with nobody_else_consumes("migrations"):
        before = newest_run()
        refused = fanout_migrate(*args)
        assert refused.returncode != 0, refused.stdout
        assert "downgrades schemas at " + TEST_REVISION in refused.stderr
        assert "--yes-downgrade" in refused.stderr
        assert newest_run() == before  # nothing recorded, nothing queued

        confirmed = fanout_migrate(*args, "--yes-downgrade")
        assert confirmed.returncode == 0, confirmed.stderr
        run = newest_run()
        assert run is not None
        assert run != before
        assert f"migration run {run.pk} started" in confirmed.stdout
        drop_run(run)


def test_wait_without_a_worker_says_so_and_gives_up_after_its_timeout(
    tenants_at_base, script_location
) -> None:
    (tenant,) = tenants_at_base(1)
    with nobody_else_consumes("migrations"):
        started = time.monotonic()
        watched = fanout_migrate(
            "--tenants", tenant.slug, "--script-location", script_location, "--wait",
            "--timeout", "8",
        )  # fmt: skip
        elapsed = time.monotonic() - started
        run = newest_run()
        drop_run(run)
    assert run is not None
    # Started from the CLI: the run says so where the admin shows who started it.
    assert run.started_from.startswith("cli: ")
    assert runs.run_state(run, limit=0)["created_by"] == run.started_from
    # Not a terminal: plain lines, never a carriage return or a clear-line sequence.
    assert "\r" not in watched.stdout
    assert "\x1b" not in watched.stdout
    assert watched.returncode == 2, watched.stdout + watched.stderr
    assert "no worker consumes the migrations queue" in watched.stderr
    assert "gave up watching after 8s" in watched.stderr
    assert "Traceback" not in watched.stderr
    assert elapsed < 30


def test_the_admin_asks_before_resuming_a_downgrade_run(
    operator: Client, tenants_at_base, script_location
) -> None:
    tenants = tenants_at_base(2)
    set_template(script_location, TEST_REVISION)
    run = runs.start_run(
        tenants=[t.slug for t in tenants], to=BASE_REVISION, script_location=script_location,
        enqueue=False, allow_downgrade=True,
    )  # fmt: skip
    runs.cancel_run(run)
    url = reverse("admin:fanout_migrationrun_resume", args=[run.pk])
    with nobody_else_consumes("migrations"):
        page = operator.post(url, HTTP_HOST=HOST)
        assert page.status_code == 200
        body = page.content.decode()
        assert "Confirm the downgrade" in body
        assert 'name="confirm_downgrade" value="yes"' in body
        run.refresh_from_db()
        assert run.status == RunStatus.CANCELLED  # not resumed yet

        done = operator.post(url, {"confirm_downgrade": "yes"}, HTTP_HOST=HOST)
        assert done.status_code == 302
        run.refresh_from_db()
        assert run.status in (RunStatus.PENDING, RunStatus.RUNNING)
        drop_run(run)


def test_the_admin_resumes_an_upgrade_run_without_asking(
    operator: Client, tenants_at_base, script_location
) -> None:
    tenants = tenants_at_base(1)
    run = runs.start_run(
        tenants=[t.slug for t in tenants], script_location=script_location, enqueue=False
    )
    runs.cancel_run(run)
    with nobody_else_consumes("migrations"):
        done = operator.post(
            reverse("admin:fanout_migrationrun_resume", args=[run.pk]), HTTP_HOST=HOST
        )
        assert done.status_code == 302
        run.refresh_from_db()
        assert run.status == RunStatus.PENDING
        drop_run(run)


def test_the_tenant_lists_migrate_action_asks_before_a_downgrade(
    operator: Client, tenants_at_base, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database ahead of the code's head (a rollback of the deploy): the action leads to the
    run form, and the form to a confirmation page that posts the same choices back, confirmed."""
    (tenant,) = tenants_at_base(1)
    monkeypatch.setattr(runs, "downgrades", lambda *_args: ["newer"])
    changelist = reverse("admin:tenants_tenant_changelist")
    action = {"action": "migrate_selected_tenants", "_selected_action": [tenant.pk], "index": 0}
    with nobody_else_consumes("migrations"):
        before = newest_run()
        form_page = operator.post(changelist, action, HTTP_HOST=HOST)
        assert form_page.status_code == 302
        form_url = form_page["Location"]
        assert form_url.endswith(f"?tenants={tenant.slug}")
        choices = {"tenants": tenant.slug, "to": "head", "canary": "0", "concurrency": "3",
                   "batch_size": "10", "max_failures": "5%"}  # fmt: skip
        page = operator.post(form_url, choices, HTTP_HOST=HOST)
        assert page.status_code == 200
        body = page.content.decode()
        assert "Confirm the downgrade" in body
        assert f'name="tenants" value="{tenant.slug}"' in body
        assert 'name="concurrency" value="3"' in body
        assert newest_run() == before

        done = operator.post(form_url, {**choices, "confirm_downgrade": "yes"}, HTTP_HOST=HOST)
        assert done.status_code == 302
        run = newest_run()
        assert run is not None
        assert run != before
        assert run.tenant_slugs == [tenant.slug]
        assert (run.canary_count, run.concurrency, run.batch_size) == (0, 3, 10)
        assert run.max_failure_percent == 5.0
        drop_run(run)

"""Migration runs end to end: real PostgreSQL, Redis and a Celery worker process."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from control_plane.fanout import runs
from control_plane.fanout.models import RunStatus, StepStatus
from tenants.cloning import TEMPLATE_SCHEMA
from tenants.database_roles import owner_connection
from tenants.models import Tenant
from tests.fanout.support import wait_for_run, wait_until
from tests.migrations_sqla.support import (
    BASE_REVISION,
    ROOT,
    TEST_REVISION,
    TEST_REVISION_2,
    break_tenant,
    mend_tenant,
    schema_state,
)

pytestmark = [pytest.mark.worker, pytest.mark.usefixtures("fanout_worker", "committed")]


def statuses(run) -> dict[str, str]:
    return dict(run.steps.filter(tenant__isnull=False).values_list("schema_name", "status"))


def test_a_run_over_200_tenants_migrates_the_template_then_canaries_then_the_rest(
    tenants_at_base, script_location
) -> None:
    tenants = tenants_at_base(200)
    schemas = [t.schema_name for t in tenants]
    run = runs.start_run(
        tenants=[t.slug for t in tenants],
        to="head",
        canary=3,
        concurrency=2,
        batch_size=25,
        script_location=script_location,
    )
    run = wait_for_run(run.pk)

    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.target["alembic"] == TEST_REVISION
    counts = runs.run_counts(run)
    assert counts["succeeded"] == 200
    assert counts["total"] == 200
    assert set(schema_state(schemas).values()) == {(TEST_REVISION, True)}
    assert schema_state([TEMPLATE_SCHEMA])[TEMPLATE_SCHEMA] == (TEST_REVISION, True)
    template = run.steps.get(schema_name=TEMPLATE_SCHEMA)
    steps = run.steps.filter(tenant__isnull=False)
    canaries = steps.filter(canary=True)
    assert canaries.count() == 3
    starts = {s.pk: s.started_at for s in steps if s.started_at}
    ends = {s.pk: s.finished_at for s in canaries if s.finished_at}
    assert len(starts) == 200
    assert template.finished_at is not None
    assert template.finished_at <= min(starts.values())
    rest = [starts[s.pk] for s in steps.filter(canary=False)]
    assert max(ends.values()) <= min(rest)
    assert {tuple(sorted(r.items())) for r in steps.values_list("revisions_after", flat=True)} == {
        tuple(sorted(run.target.items()))
    }
    recorded = {
        tuple(sorted(r.items()))
        for r in Tenant.objects.filter(pk__in=[t.pk for t in tenants]).values_list(
            "revisions", flat=True
        )
    }
    assert recorded == {tuple(sorted(run.target.items()))}
    # Batch tasks are lanes that claim their next tenants themselves: never more than
    # `concurrency` of them migrate at once.
    spans = [
        (s.batch, s.started_at, s.finished_at) for s in steps if s.started_at and s.finished_at
    ]
    assert len(spans) == 200
    busiest = max(
        len({batch for batch, start, end in spans if start <= moment <= end})
        for _b, _s, moment in spans
    )
    assert busiest <= 2
    assert run.batches_dispatched <= 3  # a lane without canaries left may hand its slot on

    # A second run to the same target opens no schema: a no-op from recorded revisions (no
    # step was attempted; how fast that is, is bench_fanout's no-op figure).
    again = runs.start_run(tenants=[t.slug for t in tenants], script_location=script_location)
    again = wait_for_run(again.pk)
    assert again.status == RunStatus.SUCCEEDED
    assert runs.run_counts(again)["skipped"] == 200
    assert set(again.steps.filter(tenant__isnull=False).values_list("attempts", flat=True)) == {0}


def test_verify_reads_version_tables_and_corrects_stale_records(
    tenants_at_base, script_location
) -> None:
    tenants = tenants_at_base(12)
    slugs = [t.slug for t in tenants]
    Tenant.objects.filter(slug=slugs[0]).update(revisions={"alembic": "stale", "django": "x"})
    Tenant.objects.filter(slug=slugs[1]).update(revisions={})
    run = wait_for_run(
        runs.start_run(
            tenants=slugs, to=BASE_REVISION, verify=True, script_location=script_location
        ).pk
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    steps = run.steps.filter(tenant__isnull=False)
    assert set(steps.values_list("status", flat=True)) == {StepStatus.SKIPPED}
    assert set(steps.values_list("attempts", flat=True)) == {1}  # every schema was read
    assert Tenant.objects.get(slug=slugs[0]).revisions == run.target
    assert Tenant.objects.get(slug=slugs[1]).revisions == run.target


def test_stale_records_fall_back_to_reading_the_schema(tenants_at_base, script_location) -> None:
    tenants = tenants_at_base(8)
    slugs = [t.slug for t in tenants]
    done = wait_for_run(runs.start_run(tenants=slugs[:2], script_location=script_location).pk)
    assert done.status == RunStatus.SUCCEEDED
    # Records that lie: two tenants migrated but recorded behind, one with a revision no
    # script directory has. The optimistic round trip's guard refuses; the schema is read.
    Tenant.objects.filter(slug__in=slugs[:2]).update(revisions=tenants[2].revisions)
    Tenant.objects.filter(slug=slugs[3]).update(revisions={"alembic": "zzz", "django": "x"})
    run = wait_for_run(runs.start_run(tenants=slugs, script_location=script_location).pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    by_schema = statuses(run)
    assert by_schema[tenants[0].schema_name] == by_schema[tenants[1].schema_name] == "skipped"
    assert by_schema[tenants[3].schema_name] == StepStatus.SUCCEEDED
    assert set(schema_state([t.schema_name for t in tenants]).values()) == {(TEST_REVISION, True)}
    assert set(run.steps.filter(tenant__isnull=False).values_list("error", flat=True)) == {""}


def test_a_failing_tenant_with_no_budget_left_stops_dispatching(
    tenants_at_base, script_location
) -> None:
    tenants = tenants_at_base(60)
    bad = tenants[12]
    break_tenant(bad.schema_name)
    run = runs.start_run(
        tenants=[t.slug for t in tenants],
        canary=0,
        concurrency=1,
        batch_size=5,
        max_failures="0",
        script_location=script_location,
    )
    run = wait_for_run(run.pk)

    assert run.status == RunStatus.FAILED
    assert "Failure budget spent" in run.error
    by_schema = statuses(run)
    assert by_schema[bad.schema_name] == StepStatus.FAILED
    failed_step = run.steps.get(schema_name=bad.schema_name)
    assert "estimate" in failed_step.error
    assert failed_step.attempts == 1
    migrated = [s for s, status in by_schema.items() if status == StepStatus.SUCCEEDED]
    untouched = [s for s, status in by_schema.items() if status == StepStatus.PENDING]
    # Steps follow the tenants' order; the one lane stopped at the end of the failing chunk.
    assert failed_step.batch == run.batches_dispatched == 1
    assert len(migrated) >= 10
    assert len(untouched) >= 45
    state = schema_state(list(by_schema))
    assert all(
        state[s] == (TEST_REVISION, True) for s in migrated
    )  # migrated tenants stay migrated
    assert all(state[s] == (BASE_REVISION, False) for s in untouched)
    assert state[bad.schema_name] == (BASE_REVISION, True)  # rolled back whole: its own column only

    # Mend the tenant and resume: only the unfinished tenants run, and the run succeeds.
    mend_tenant(bad.schema_name)
    runs.resume_run(run)
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert set(statuses(run).values()) == {StepStatus.SUCCEEDED}
    assert set(schema_state(list(by_schema)).values()) == {(TEST_REVISION, True)}
    assert set(run.steps.filter(schema_name__in=migrated).values_list("attempts", flat=True)) == {1}


def test_a_failing_tenant_with_budget_left_lets_the_others_finish_and_retries_alone(
    tenants_at_base, script_location
) -> None:
    tenants = tenants_at_base(40)
    bad = tenants[-1]
    break_tenant(bad.schema_name)
    run = runs.start_run(
        tenants=[t.slug for t in tenants],
        canary=2,
        batch_size=8,
        max_failures="5%",
        script_location=script_location,
    )
    run = wait_for_run(run.pk)

    assert run.status == RunStatus.FAILED
    counts = runs.run_counts(run)
    assert counts["succeeded"] == 39
    assert counts["failed"] == 1
    assert counts["pending"] == 0
    assert "1 tenants failed" in run.error

    mend_tenant(bad.schema_name)
    step = runs.retry_tenant(run, bad.slug)
    assert step.status == StepStatus.PENDING
    wait_until(lambda: run.steps.get(pk=step.pk).status == StepStatus.SUCCEEDED)
    run.refresh_from_db()
    wait_until(lambda: run.__class__.objects.get(pk=run.pk).status == RunStatus.SUCCEEDED, 10)
    assert schema_state([bad.schema_name])[bad.schema_name] == (TEST_REVISION, True)


def test_cancel_lets_tenants_in_flight_finish_and_resume_migrates_only_the_rest(
    tenants_at_base, slow_script_location
) -> None:
    tenants = tenants_at_base(120)
    run = runs.start_run(
        tenants=[t.slug for t in tenants],
        canary=0,
        concurrency=2,
        batch_size=10,
        script_location=slow_script_location,
    )
    wait_until(lambda: runs.run_counts(run)["succeeded"] >= 10)
    runs.cancel_run(run)
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.CANCELLED
    by_schema = statuses(run)
    done = [s for s, st in by_schema.items() if st == StepStatus.SUCCEEDED]
    assert 10 <= len(done) < 100
    assert set(by_schema.values()) == {StepStatus.SUCCEEDED, StepStatus.PENDING}
    state = schema_state(list(by_schema))
    for schema, status in by_schema.items():  # each tenant wholly migrated or untouched
        assert state[schema] == (
            (TEST_REVISION, True) if status == StepStatus.SUCCEEDED else (BASE_REVISION, False)
        )

    runs.resume_run(run)
    run = wait_for_run(run.pk)
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert set(statuses(run).values()) == {StepStatus.SUCCEEDED}
    assert set(run.steps.filter(schema_name__in=done).values_list("attempts", flat=True)) == {1}


def test_two_runs_over_overlapping_tenants_migrate_each_tenant_once(
    tenants_at_base, slow_script_location
) -> None:
    tenants = tenants_at_base(60)
    slugs = [t.slug for t in tenants]
    first = runs.start_run(
        tenants=slugs[:40], canary=0, batch_size=5, script_location=slow_script_location
    )
    second = runs.start_run(
        tenants=slugs[20:], canary=0, batch_size=5, script_location=slow_script_location
    )
    first, second = wait_for_run(first.pk), wait_for_run(second.pk)

    assert first.status == second.status == RunStatus.SUCCEEDED, (first.error, second.error)
    a, b = statuses(first), statuses(second)
    overlap = set(a) & set(b)
    assert len(overlap) == 20
    for schema in overlap:  # exactly one of the two runs migrated it; the other found it done
        assert sorted([a[schema], b[schema]]) == [StepStatus.SKIPPED, StepStatus.SUCCEEDED], schema
    assert set(schema_state([t.schema_name for t in tenants]).values()) == {(TEST_REVISION, True)}


def test_downgrade_to_a_named_revision_and_upgrade_again(tenants_at_base, script_location) -> None:
    tenants = tenants_at_base(30)
    slugs, schemas = [t.slug for t in tenants], [t.schema_name for t in tenants]
    up = wait_for_run(runs.start_run(tenants=slugs, script_location=script_location).pk)
    assert up.status == RunStatus.SUCCEEDED
    assert up.target["alembic"] == TEST_REVISION

    with pytest.raises(runs.DowngradeNotConfirmed, match=TEST_REVISION):
        runs.start_run(tenants=slugs, to=BASE_REVISION, script_location=script_location)
    down = wait_for_run(
        runs.start_run(
            tenants=slugs, to=BASE_REVISION, script_location=script_location, allow_downgrade=True
        ).pk
    )
    assert down.status == RunStatus.SUCCEEDED, down.error
    assert down.target["alembic"] == BASE_REVISION
    assert set(schema_state([*schemas, TEMPLATE_SCHEMA]).values()) == {(BASE_REVISION, False)}
    assert set(
        Tenant.objects.filter(slug__in=slugs).values_list("revisions__alembic", flat=True)
    ) == {BASE_REVISION}
    before = set(
        down.steps.filter(tenant__isnull=False).values_list("revisions_before__alembic", flat=True)
    )
    assert before == {TEST_REVISION}

    again = wait_for_run(
        runs.start_run(tenants=slugs, to="head", script_location=script_location).pk
    )
    assert again.status == RunStatus.SUCCEEDED, again.error
    assert set(schema_state(schemas).values()) == {(TEST_REVISION, True)}


def test_non_transactional_steps_build_the_index_concurrently(
    tenants_at_base, concurrent_script_location
) -> None:
    tenants = tenants_at_base(6)
    schemas = [t.schema_name for t in tenants]
    run = wait_for_run(
        runs.start_run(
            tenants=[t.slug for t in tenants], script_location=concurrent_script_location
        ).pk
    )
    assert run.status == RunStatus.SUCCEEDED, run.error
    assert run.target["alembic"] == TEST_REVISION_2
    with owner_connection() as conn:
        rows = conn.execute(
            "SELECT n.nspname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'tasks_effort'"
            " AND n.nspname = ANY(%s)",
            ([*schemas, TEMPLATE_SCHEMA],),
        ).fetchall()
    assert sorted(rows) == sorted((s, True) for s in [*schemas, TEMPLATE_SCHEMA])
    down = wait_for_run(
        runs.start_run(
            tenants=[t.slug for t in tenants],
            to=BASE_REVISION,
            script_location=concurrent_script_location,
            allow_downgrade=True,
        ).pk
    )
    assert down.status == RunStatus.SUCCEEDED, down.error
    assert set(schema_state(schemas).values()) == {(BASE_REVISION, False)}


def test_a_tenant_onboarded_during_a_run_ends_at_the_target(
    tenants_at_base, slow_script_location, unique
) -> None:
    from control_plane.tenancy.onboarding import (
        provision_onboarding,
        request_onboarding,
        validate_onboarding,
    )
    from tenants.provisioning import drop_storage

    tenants = tenants_at_base(80)
    run = runs.start_run(
        canary=1, batch_size=10, script_location=slow_script_location
    )  # all tenants
    wait_until(lambda: runs.run_counts(run)["succeeded"] >= 5)
    slug = f"late{unique}"
    data = validate_onboarding(
        name="Late", slug=slug, domain=f"late{unique}.localhost", isolation="schema",
        owner_email=f"late{unique}@example.com",
    )  # fmt: skip
    requested = request_onboarding(data=data, enqueue=False)
    try:
        provision_onboarding(requested.onboarding.pk)
        run = wait_for_run(run.pk)
        assert run.status == RunStatus.SUCCEEDED, run.error
        late = Tenant.objects.get(slug=slug)
        assert run.steps.filter(tenant=late).exists()  # the sweep caught it
        assert schema_state([late.schema_name])[late.schema_name] == (TEST_REVISION, True)
        assert late.revisions == run.target
        assert set(statuses(run).values()) <= {StepStatus.SUCCEEDED, StepStatus.SKIPPED}
        # Every tenant of this test, and the late one, once (other tests' tenants may be in the run too).
        assert {t.schema_name for t in tenants} | {late.schema_name} <= set(statuses(run))
    finally:
        late = Tenant.objects.get(slug=slug)
        drop_storage(late)
        late.delete()


def test_fanout_migrate_command_shows_progress_and_fails_with_the_run(
    tenants_at_base, script_location
) -> None:
    tenants = tenants_at_base(20)
    break_tenant(tenants[5].schema_name)
    args = [
        sys.executable, "manage.py", "fanout_migrate", "--tenants", ",".join(t.slug for t in tenants),
        "--canary", "0", "--batch-size", "5", "--max-failures", "1", "--script-location",
        script_location, "--wait",
    ]  # fmt: skip
    failed = subprocess.run(
        args, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=120
    )
    assert failed.returncode != 0, failed.stdout
    assert "[" in failed.stdout
    assert "100.0%" in failed.stdout
    assert f"failed {tenants[5].schema_name}" in failed.stdout

    mend_tenant(tenants[5].schema_name)
    ok = subprocess.run(
        args, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=120
    )
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "succeeded" in ok.stdout

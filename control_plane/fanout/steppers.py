"""What a run does to one schema: the migrator for a migrate run, the backfiller for a backfill run.

Both have one method, `migrate(schema, attempted_before=, recorded=) -> Outcome`, so the
orchestrator's platform stage and the batches run every operation alike: same leases, reaper,
retries on a lost database, budget, cancel and resume. A backfill run records each schema's
progress on its TenantMigration row (`progress`) as it goes, and a redelivered schema resumes
from there. This module only builds steppers; it never decides what a run covers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import psycopg
import sqlalchemy as sa
from django.db import transaction

from control_plane.fanout.models import (
    LANE_STEPS,
    MigrationRun,
    Operation,
    StepStatus,
    TenantMigration,
)
from migrations_sqla import backfill
from migrations_sqla.migrator import Outcome, SchemaMigrator, Target
from tenants.cloning import TEMPLATE_SCHEMA
from tenants.models import Isolation, Tenant
from tenants.placement import SHARED_SCHEMA


class Stepper(Protocol):
    def migrate(
        self,
        schema: str,
        *,
        attempted_before: bool = False,
        recorded: dict[str, str] | None = None,
    ) -> Outcome: ...


def run_target(run: MigrationRun) -> Target:
    return Target(
        alembic=run.target.get("alembic") or None,
        django=run.target.get("django"),
        location=run.script_location,
        lock_timeout=run.lock_timeout,
        statement_timeout=run.statement_timeout,
    )


def stepper_for(run: MigrationRun, conn: sa.Connection, target: Target | None = None) -> Stepper:
    """The run's per-schema worker over `conn` (`target`: the platform stage's own)."""
    if run.operation == Operation.BACKFILL:
        return backfiller_for(run, conn)
    return SchemaMigrator(conn, target or run_target(run))


def backfiller_for(run: MigrationRun, conn: sa.Connection) -> backfill.SchemaBackfiller:
    options = run.options
    declared = backfill.declared_backfill(run.script_location, str(options["revision"]))
    return backfill.SchemaBackfiller(
        conn,
        declared,
        tenant_ids=tenant_ids_lookup(),
        options=backfill.Options(
            batch_rows=int(options.get("batch_rows") or backfill.DEFAULT_BATCH_ROWS),
            throttle_ms=int(options.get("throttle_ms") or 0),
            lock_timeout=run.lock_timeout,
            statement_timeout=run.statement_timeout,
        ),
        progress=lambda schema, state: record_progress(run.pk, schema, state),
        resume_from=lambda schema: recorded_progress(run.pk, schema),
    )


def plan_shared_lanes(run: MigrationRun, conn: sa.Connection) -> int:
    """A backfill run's lanes of the shared schema, planned once: how many steps it has (0:
    too few rows to split, the platform stage fills the schema itself).

    Up to `options["lanes"]` (default: the run's concurrency) lanes of at least 2 x batch_rows
    pending rows each, recorded as pending steps (tenant null, `shared/<n>`) whose progress
    holds their bounds; a redelivered platform stage finds them and plans nothing again.
    """
    existing = run.steps.filter(LANE_STEPS).count()
    if existing:
        return existing
    options = run.options
    declared = backfill.declared_backfill(run.script_location, str(options["revision"]))
    batch_rows = int(options.get("batch_rows") or backfill.DEFAULT_BATCH_ROWS)
    raw = conn.connection.driver_connection
    assert isinstance(raw, psycopg.Connection)
    lanes = backfill.plan_lanes(
        raw,
        SHARED_SCHEMA,
        declared,
        tenant_ids_in(SHARED_SCHEMA),
        lanes=int(options.get("lanes") or run.concurrency),
        min_rows=2 * batch_rows,
    )
    if len(lanes) < 2:
        return 0
    with transaction.atomic():
        TenantMigration.objects.bulk_create(
            [
                TenantMigration(
                    run=run,
                    schema_name=backfill.lane_name(SHARED_SCHEMA, number),
                    status=StepStatus.PENDING,
                    progress={"rows": 0, "lane": lane},
                )
                for number, lane in enumerate(lanes, start=1)
            ],
            ignore_conflicts=True,
        )
    return len(lanes)


def tenant_ids_lookup() -> Callable[[str], list[int]]:
    """tenant_ids_in, with every schema tenant's id read in one query on first use (a batch
    fills many schemas: one query each would cost as much as a small schema's fill)."""
    by_schema: dict[str, list[int]] | None = None

    def lookup(schema: str) -> list[int]:
        nonlocal by_schema
        if schema in (TEMPLATE_SCHEMA, SHARED_SCHEMA):
            return tenant_ids_in(schema)
        if by_schema is None:
            by_schema = {}
            for name, pk in Tenant.objects.filter(isolation=Isolation.SCHEMA).values_list(
                "schema_name", "pk"
            ):
                by_schema.setdefault(name, []).append(pk)
        found = by_schema.get(schema)
        return found if found is not None else tenant_ids_in(schema)  # onboarded since

    return lookup


def tenant_ids_in(schema: str) -> list[int]:
    """Whose rows a schema holds: the shared schema every rls tenant's, the template none."""
    if schema == TEMPLATE_SCHEMA:
        return []
    if schema == SHARED_SCHEMA:
        return list(Tenant.objects.filter(isolation=Isolation.RLS).values_list("pk", flat=True))
    return list(Tenant.objects.filter(schema_name=schema).values_list("pk", flat=True))


def record_progress(run_id: int, schema: str, state: dict[str, Any]) -> None:
    TenantMigration.objects.filter(run_id=run_id, schema_name=schema).update(progress=state)


def recorded_progress(run_id: int, schema: str) -> dict[str, Any]:
    found = (
        TenantMigration.objects.filter(run_id=run_id, schema_name=schema)
        .values_list("progress", flat=True)
        .first()
    )
    return dict(found or {})

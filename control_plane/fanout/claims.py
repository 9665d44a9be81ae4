"""A lane's next tenants in one round trip: its last outcomes written and the next claimed at once.

The common case between two chunks of a batch lane (the run rolling out, no failure to weigh
against the budget, no shared-schema lane waiting) needs none of `orchestrator.advance`'s
reads: one statement locks the run row (as advance does), claims the next unassigned pending
tenants into the lane's batch number (FOR UPDATE SKIP LOCKED, in id order, the same
near-the-end split as advance), marks them running and, only when it claimed any, writes the
lane's buffered outcomes and the tenants' recorded revisions. When it claims nothing it writes
nothing either, and the caller goes the careful way (advance with its outcomes), so stage
changes, the budget, the sweep and the final status stay advance's alone, and no batch is ever
seen finished while its task still holds its connection.
At the end of a run a lane that claims nothing retires (`retire`) when another lane still has
tenants: it writes its outcomes and ends without an advance of its own, which would find that
lane in flight and do nothing (one lane's advance less serialised on the run row at the end);
the last lane's advance settles the run.
This module never migrates a schema and never dispatches a batch task.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import connection

from control_plane.fanout.models import MigrationRun, RunStatus, Stage, StepStatus, TenantMigration
from tenants.models import Tenant

# The CTEs that write a lane's buffered outcomes (`%(outcomes)s`, jsonb) to its steps and their
# tenants' revisions when the statement's CTE `{gate}` has a row, closing the CTE before them:
# one text for every statement that records outcomes, put where it says {outcomes_recorded}.
RECORD_OUTCOMES = """), outcomes AS (
    SELECT * FROM jsonb_to_recordset(%(outcomes)s::jsonb) AS x(
        id bigint, tenant_id bigint, status text, attempts int, started_at timestamptz,
        finished_at timestamptz, duration_ms float8, before jsonb, after jsonb, error text,
        revise boolean)
    WHERE EXISTS (SELECT 1 FROM {gate})
), recorded AS (
    UPDATE {steps} AS m SET status = v.status, attempts = m.attempts + v.attempts,
           started_at = coalesce(m.started_at, v.started_at), finished_at = v.finished_at,
           duration_ms = v.duration_ms, revisions_before = v.before, revisions_after = v.after,
           error = v.error
    FROM outcomes v WHERE m.id = v.id
), revised AS (
    UPDATE {tenants} AS t SET revisions = v.after
    FROM outcomes v WHERE t.id = v.tenant_id AND v.revise
)
"""

CLAIM_NEXT = """
WITH run AS (
    SELECT id, batch_size, concurrency FROM {runs}
    WHERE id = %(run)s AND status = %(running)s AND stage = %(rollout)s
    FOR UPDATE
), waiting AS (
    SELECT count(*) AS n FROM {steps}
    WHERE run_id = %(run)s AND status = %(pending)s AND batch IS NULL AND tenant_id IS NOT NULL
), next AS (
    SELECT s.id FROM {steps} s
    WHERE s.run_id = %(run)s AND s.status = %(pending)s AND s.batch IS NULL
      AND s.tenant_id IS NOT NULL
      AND NOT EXISTS (
          SELECT 1 FROM {steps} l
          WHERE l.run_id = %(run)s AND l.status = %(pending)s AND l.batch IS NULL
            AND l.tenant_id IS NULL AND strpos(l.schema_name, '/') > 0)
    ORDER BY s.id
    LIMIT coalesce((SELECT least(r.batch_size, ceil(w.n::numeric / r.concurrency))::int
                    FROM run r, waiting w), 0)
    FOR UPDATE OF s SKIP LOCKED
), claimed AS (
    UPDATE {steps} s SET batch = %(batch)s, status = %(step_running)s, started_at = now()
    FROM next WHERE s.id = next.id
    RETURNING s.id, s.tenant_id, s.schema_name, s.attempts, s.revisions_before
{outcomes_recorded}SELECT id, tenant_id, schema_name, %(pending)s, attempts, revisions_before::text
FROM claimed ORDER BY id
"""


def claim_next(run_id: int, batch: int, outcomes: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """The lane's next tenants, claimed and running, with `outcomes` (none failed) recorded;
    [] when the careful way must decide (nothing was written then).

    Rows are (id, tenant_id, schema_name, status before the claim, attempts, recorded revisions),
    as batches read a lane's unfinished tenants. One statement on Django's connection, which
    must be in autocommit (a batch task's is): the run row's lock lasts that statement only.
    """
    query = CLAIM_NEXT.replace("{outcomes_recorded}", RECORD_OUTCOMES).format(
        gate="claimed",
        runs=MigrationRun._meta.db_table,
        steps=TenantMigration._meta.db_table,
        tenants=Tenant._meta.db_table,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            query,
            {
                "run": run_id,
                "batch": batch,
                "outcomes": json.dumps(outcomes),
                "running": RunStatus.RUNNING.value,
                "step_running": StepStatus.RUNNING.value,
                "rollout": Stage.ROLLOUT.value,
                "pending": StepStatus.PENDING.value,
            },
        )
        # jsonb as text, decoded here: Django's connection leaves jsonb undecoded for its fields.
        return [(*row[:5], json.loads(row[5])) for row in cursor.fetchall()]


# Two statements in one round trip (one implicit transaction): the run row's lock first, then
# the decision on a snapshot taken once the lock is held. In one statement the snapshot would
# predate the lock: two lanes finishing together would each see the other still running, both
# retire, and nobody would settle the run.
RETIRE = """
SELECT id FROM {runs} WHERE id = %(run)s FOR UPDATE;
WITH retiring AS (
    SELECT 1 FROM {runs} r
    WHERE r.id = %(run)s AND r.status = %(running)s AND r.stage = %(rollout)s
      AND NOT EXISTS (
          SELECT 1 FROM {steps}
          WHERE run_id = %(run)s AND status = %(pending)s AND batch IS NULL)
      AND NOT EXISTS (
          SELECT 1 FROM {steps}
          WHERE run_id = %(run)s AND batch = %(batch)s
            AND status IN (%(pending)s, %(step_running)s) AND id <> ALL(%(ids)s::bigint[]))
      AND EXISTS (
          SELECT 1 FROM {steps}
          WHERE run_id = %(run)s AND batch IS NOT NULL AND batch <> %(batch)s
            AND status IN (%(pending)s, %(step_running)s))
{outcomes_recorded}SELECT EXISTS (SELECT 1 FROM retiring)
"""


def retire(run_id: int, batch: int, outcomes: list[dict[str, Any]]) -> bool:
    """True when the lane's last `outcomes` (none failed) are written and the lane may end
    without an advance: the run is rolling out, no tenant or shared lane waits unassigned, the
    lane has nothing unfinished beyond them, and another lane of the run has tenants
    unfinished, whose own end advances the run. False: nothing was written, advance decides.

    One round trip on Django's connection, which must be in autocommit (a batch task's is).
    """
    query = RETIRE.replace("{outcomes_recorded}", RECORD_OUTCOMES).format(
        gate="retiring",
        runs=MigrationRun._meta.db_table,
        steps=TenantMigration._meta.db_table,
        tenants=Tenant._meta.db_table,
    )
    with connection.cursor() as cursor:
        cursor.execute(
            query,
            {
                "run": run_id,
                "batch": batch,
                "ids": [int(str(o["id"])) for o in outcomes],
                "outcomes": json.dumps(outcomes),
                "running": RunStatus.RUNNING.value,
                "step_running": StepStatus.RUNNING.value,
                "rollout": Stage.ROLLOUT.value,
                "pending": StepStatus.PENDING.value,
            },
        )
        cursor.nextset()  # past the lock's row
        row = cursor.fetchone()
    return bool(row and row[0])

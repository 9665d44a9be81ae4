"""How the migrator's outcome for one schema is recorded on the run's TenantMigration row."""

from __future__ import annotations

from control_plane.fanout.models import StepStatus
from migrations_sqla.migrator import Result

STEP_STATUS = {
    Result.MIGRATED: StepStatus.SUCCEEDED,
    Result.SKIPPED: StepStatus.SKIPPED,
    Result.FAILED: StepStatus.FAILED,
}


def step_status(result: Result) -> StepStatus:
    return STEP_STATUS[result]

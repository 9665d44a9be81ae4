"""What changed in the operator API (/ops/v1), for the committed changelog (openapi/CHANGELOG.md).

The operator API is not versioned: its clients are this platform's staff and tooling, which move
with it. A change that a script against it could notice is still declared here, dated, so the
changelog says when and how the answers changed; `manage.py api_contract` renders it after the
tenant API's versions.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date


@dataclass(frozen=True)
class OpsChange:
    day: date
    description: str


OPS_CHANGES: tuple[OpsChange, ...] = (
    OpsChange(
        date(2026, 12, 1),
        "`POST /ops/v1/migration-runs` refuses a run that takes any schema to an older revision "
        "unless the body says `confirm_downgrade: true` (409 problem whose `errors` name "
        "`confirm_downgrade`; nothing starts); `POST /ops/v1/migration-runs/{run_id}/resume` "
        "takes the same field for a downgrade run.",
    ),
    OpsChange(
        date(2026, 12, 1),
        "`POST /ops/v1/migration-runs`: a revision or tenant that does not exist, or a failure "
        "budget past its bounds, is 422 (was 400); `max_failures` is described and checked "
        "whole as a count or a percentage (surrounding spaces are now a 400).",
    ),
    OpsChange(
        date(2026, 12, 1),
        "`POST /ops/v1/tenants`: a slug or domain already taken is 409 and a reserved slug or a "
        "domain that would never be served is 422 (both were 400). `slug`, `domain` and "
        "`owner_email` are described and checked whole (pattern, host name, e-mail; surrounding "
        "spaces are a 400), and `name` is described as at most 200 characters, as checked.",
    ),
    OpsChange(
        date(2026, 12, 1),
        "`Idempotency-Key` (here and on the tenant API's imports) refuses control characters "
        "only, as its new `pattern` says (it refused every non-printable one); text fields are "
        "described without NUL, which they always refused.",
    ),
    OpsChange(
        date(2026, 12, 7),
        "Tenant moves: `GET /ops/v1/moves` (filters `status`, `tenant`) and "
        "`GET /ops/v1/moves/{move_id}` show each move's state, outcome and `progress` (elapsed "
        "time, `stuck`, whether a worker consumes its queue); `POST /ops/v1/moves` starts one "
        "(202 with `Location`; a move the tenant's state refuses is recorded failed and answered "
        "409 naming it in `move`); `POST /ops/v1/moves/{move_id}/retry` sends a stuck move again "
        "(409 while its message waits or a live worker holds it, and for a finished move).",
    ),
)


def changelog() -> str:
    """The operator API's section of the changelog, newest first."""
    lines = ["# Operator API (/ops/v1) changes", ""]
    for change in sorted(OPS_CHANGES, key=lambda c: c.day, reverse=True):
        lines.append(f"- {change.day.isoformat()}: {change.description}")
    return "\n".join(lines) + "\n"

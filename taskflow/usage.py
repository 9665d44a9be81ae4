"""How much of the platform a tenant uses: rows, bytes of row data, and writes of the last day.

Read through a session bound to the tenant, so it is one query shape for both placements (its
own schema or the shared one, where row-level security shows only its rows). The operator's
view of which tenants belong in their own schema and which in the shared one reads this.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.orm import Session

from taskflow.models import Base

HISTORY_SUFFIX = "_history"


@dataclass(frozen=True)
class TenantUsage:
    rows: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    requests_last_day: int = 0

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def tenant_usage(session: Session) -> TenantUsage:
    """Rows and row bytes per TaskFlow table, and the API requests that wrote in the last day
    (distinct request ids in the history tables): two statements."""
    tables = sorted(Base.metadata.tables.values(), key=lambda t: t.name)
    counts = [
        sa.select(
            sa.literal(table.name).label("name"),
            sa.func.count().label("rows"),
            sa.func.coalesce(
                sa.func.sum(sa.func.pg_column_size(sa.text(f"{table.name}.*"))), 0
            ).label("bytes"),
        ).select_from(table)
        for table in tables
    ]
    histories = [t for t in tables if t.name.endswith(HISTORY_SUFFIX)]
    since = sa.func.now() - sa.text("interval '1 day'")
    writes = sa.union_all(
        *(
            sa.select(t.c.request_id).where(t.c.at >= since, t.c.request_id.isnot(None))
            for t in histories
        )
    ).subquery()
    result: list[tuple[str, int, int]] = [
        (str(row[0]), int(row[1]), int(row[2])) for row in session.execute(sa.union_all(*counts))
    ]
    requests = session.execute(
        sa.select(sa.func.count(sa.distinct(writes.c.request_id)))
    ).scalar_one()
    return TenantUsage(
        rows={name: rows for name, rows, _ in result},
        bytes=sum(size for _, _, size in result),
        requests_last_day=int(requests),
    )

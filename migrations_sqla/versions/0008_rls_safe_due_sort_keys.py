"""The due sort keys become CASE expressions, so keyset pages by due date stay index ranges
under row-level security.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07

A nullable sort key orders by an expression with a place for NULL ("infinity"). It was
`coalesce(due, 'infinity')`. Under row-level security (every placement, 0004) PostgreSQL only
pushes a query's condition into an index scan ahead of the policy when it cannot leak values,
and it counts a `coalesce` as possibly leaky while a `CASE` is not: the keyset comparison
`(coalesce(due, ...), id) > (...)` became a Filter over every row of the tenant before the
cursor (a deep page of `-priority,due_at` read 200,000 rows to return 50), where the same
comparison on `CASE WHEN due IS NULL THEN 'infinity' ELSE due END` is the index's range.

So the four due indexes get CASE twins (`*_sort_live`), built CONCURRENTLY (retried on lock
timeouts, rebuilt when left invalid, as every declared index), and the coalesce ones are
dropped CONCURRENTLY after them; the application's sort expressions (taskflow.models
DUE_DATE_SORT, DUE_AT_SORT) are the same CASE expressions. Until a schema runs this revision
its due sorts are served without an index (correct, slower), for the moments a rolling
deploy takes.

It sits between the `due_at` expand (0007) and that evolution's contract steps (0007d, 0007c),
so that "head" reaches it while the contract is pending (migrations_sqla.scripts.released_head);
the evolution's expand phase runs to "head" when "head" follows the expand revision
(control_plane.evolution.catalog). 0007d drops the `due_date` ones by their new names.
"""

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

DUE_DATE_KEY = "(CASE WHEN due_date IS NULL THEN 'infinity'::date ELSE due_date END)"
DUE_AT_KEY = "(CASE WHEN due_at IS NULL THEN 'infinity'::timestamptz ELSE due_at END)"
COALESCED_DUE_DATE = "coalesce(due_date, 'infinity'::date)"
COALESCED_DUE_AT = "coalesce(due_at, 'infinity'::timestamptz)"
LIVE = " WHERE deleted_at IS NULL"


def _build(name: str, key: str, *, by_priority: bool) -> str:
    columns = f"tenant_id, priority DESC, {key}, id" if by_priority else f"tenant_id, {key}, id"
    return f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {name} ON {{schema}}.tasks ({columns}){LIVE}"


def _drop(*names: str) -> tuple[str, ...]:
    return tuple(f"DROP INDEX CONCURRENTLY IF EXISTS {{schema}}.{name}" for name in names)


non_transactional_upgrade = (
    _build("tasks_due_sort_live", DUE_DATE_KEY, by_priority=False),
    _build("tasks_due_at_sort_live", DUE_AT_KEY, by_priority=False),
    _build("tasks_priority_due_sort_live", DUE_DATE_KEY, by_priority=True),
    _build("tasks_priority_due_at_sort_live", DUE_AT_KEY, by_priority=True),
    *_drop(
        "tasks_due_live",
        "tasks_due_at_live",
        "tasks_priority_due_live",
        "tasks_priority_due_at_live",
    ),
)


def upgrade() -> None:
    pass


def downgrade() -> None:
    # In the transaction, not concurrently (an emergency path, as 0007d's): a downgrade further
    # down drops what 0001/0002 built, in the same transaction, before any non-transactional
    # step would have rebuilt it.
    for name, key, by_priority in (
        ("tasks_due_live", COALESCED_DUE_DATE, False),
        ("tasks_due_at_live", COALESCED_DUE_AT, False),
        ("tasks_priority_due_live", COALESCED_DUE_DATE, True),
        ("tasks_priority_due_at_live", COALESCED_DUE_AT, True),
    ):
        op.execute(_build(name, key, by_priority=by_priority).replace(" CONCURRENTLY", "")
                   .replace("{schema}.", ""))  # fmt: skip
    # One index a statement: Citus refuses to drop several distributed objects in one.
    for name in (
        "tasks_due_sort_live",
        "tasks_due_at_sort_live",
        "tasks_priority_due_sort_live",
        "tasks_priority_due_at_sort_live",
    ):
        op.execute(f"DROP INDEX IF EXISTS {name}")

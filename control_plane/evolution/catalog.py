"""The evolutions the platform knows: each names its revisions and its read switch.

An evolution's shape lives in code, beside the revisions it ships (migrations_sqla/versions):
the expand revision (whose parent is where an expand rollback goes back to, and which declares
the BACKFILL), the contract revisions in order (each `contract_step = True`, so no ordinary run
reaches them), and the read switch (tenants.switches) the application reads, with its value
before and after the switch.
"""

from __future__ import annotations

from dataclasses import dataclass

from migrations_sqla import scripts


@dataclass(frozen=True)
class Definition:
    name: str
    title: str
    expand: str
    contract: tuple[str, ...]
    switch: str
    old_value: str
    new_value: str

    def expand_target(self, location: str = "") -> str:
        """Where the expand phase runs: "head" when it follows the expand revision (a later
        release's revisions stacked below the contract, e.g. 0008's sort keys, come along, and a
        schema onboarded at "head" is not taken back down), else the expand revision."""
        head = scripts.released_head(location)
        if head is None or head == self.expand:
            return self.expand
        below = scripts.script_directory(location).iterate_revisions(head, "base")
        return head if self.expand in {r.revision for r in below} else self.expand

    def before(self, location: str = "") -> str:
        """The revision an expand rollback returns to: the expand revision's parent."""
        found = scripts.script_directory(location).get_revision(self.expand)
        assert found is not None
        assert isinstance(found.down_revision, str)
        return found.down_revision


TASKS_DUE_AT = Definition(
    name="tasks_due_at",
    title="tasks.due_date (date) becomes tasks.due_at (timestamptz)",
    expand="0007",
    contract=("0007d", "0007c"),
    switch="tasks.due",
    old_value="due_date",
    new_value="due_at",
)

CATALOG: dict[str, Definition] = {d.name: d for d in (TASKS_DUE_AT,)}

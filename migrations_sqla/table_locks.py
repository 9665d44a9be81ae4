"""The tables a compiled plan locks, taken up front in one fixed order.

A plan that changes several tables takes each one's lock when its statement comes, in the order
the revisions wrote them (0006 takes comments, then tasks, then projects). Traffic that holds one
of those tables while it waits for another, or a second writer of the same tables in the other
order, then makes a cycle: PostgreSQL's deadlock detector cancels one side, and a schema's
migration failed for nothing. So when a plan locks two or more tables (or one table in two
modes: a lock upgrade, see lock_statement), its transaction starts
with one `LOCK TABLE` naming them all in a deterministic (sorted) order, in the strongest mode
any of them needs: the step then waits for what holds them, holding none of them until it has
them all, and never upgrades a lock it holds. The migrator still retries a step that lost a
deadlock (traffic that takes the same tables in another order can still close a cycle while the
LOCK waits); this only makes it rare and keeps two migrators from ever deadlocking each other.

Read from the plan's SQL text (never from a database): statements inside dollar-quoted bodies
(functions, DO blocks) are not seen, names qualified with a schema are left alone (the plan
works in its own schema through search_path), and tables the plan makes itself (or renames to)
are not locked, since they do not exist when it starts. This module never touches a database.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

NAME = r'"?([A-Za-z_][A-Za-z0-9_$]*)"?(?!\s*\.)(?![A-Za-z0-9_$."])'

# The lock modes a LOCK TABLE may take, weakest first; see covering_mode for why three suffice.
ROW_EXCLUSIVE = "ROW EXCLUSIVE"
SHARE_ROW_EXCLUSIVE = "SHARE ROW EXCLUSIVE"
ACCESS_EXCLUSIVE = "ACCESS EXCLUSIVE"

# (statement pattern, the mode PostgreSQL takes on the table it names)
LOCKING_STATEMENTS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern, re.IGNORECASE | re.DOTALL), mode)
    for pattern, mode in (
        (r"\bALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?" + NAME, ACCESS_EXCLUSIVE),
        (r"\bDROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?" + NAME, ACCESS_EXCLUSIVE),
        (r"\bTRUNCATE\s+(?:TABLE\s+)?(?:ONLY\s+)?" + NAME, ACCESS_EXCLUSIVE),
        (r"\bDROP\s+TRIGGER\s+(?:IF\s+EXISTS\s+)?\w+\s+ON\s+" + NAME, ACCESS_EXCLUSIVE),
        (r"\b(?:CREATE|ALTER|DROP)\s+POLICY\s+(?:IF\s+EXISTS\s+)?\w+\s+ON\s+" + NAME,
         ACCESS_EXCLUSIVE),
        (r"\bCREATE\s+(?:OR\s+REPLACE\s+)?(?:CONSTRAINT\s+)?TRIGGER\s+\w+\s+[^;]*?\bON\s+" + NAME,
         SHARE_ROW_EXCLUSIVE),
        (r"\bREFERENCES\s+" + NAME, SHARE_ROW_EXCLUSIVE),
        (r"\bCREATE\s+(?:UNIQUE\s+)?INDEX\s+(?!CONCURRENTLY)(?:IF\s+NOT\s+EXISTS\s+)?\w*\s*ON\s+"
         r"(?:ONLY\s+)?" + NAME, SHARE_ROW_EXCLUSIVE),
        (r"\bUPDATE\s+(?:ONLY\s+)?" + NAME + r"\s+(?:AS\s+\w+\s+|\w+\s+)?SET\b", ROW_EXCLUSIVE),
        (r"\bDELETE\s+FROM\s+(?:ONLY\s+)?" + NAME, ROW_EXCLUSIVE),
        (r"\bINSERT\s+INTO\s+" + NAME, ROW_EXCLUSIVE),
    )
)  # fmt: skip
MADE_BY_THE_PLAN = (
    re.compile(r"\bCREATE\s+(?:UNLOGGED\s+)?TABLE\s+(?:IF\s+NOT\s+EXISTS\s+)?" + NAME, re.I),
    re.compile(r"\bRENAME\s+TO\s+" + NAME, re.I),
)
# Alembic's own bookkeeping, written under the schema's advisory lock only.
NEVER_LOCKED = frozenset({"alembic_version"})

DOLLAR_QUOTED = re.compile(r"\$([A-Za-z_]\w*)?\$.*?\$\1\$", re.DOTALL)
STRING = re.compile(r"'(?:[^']|'')*'")
COMMENT = re.compile(r"--[^\n]*")


def modes_by_table(plan_sql: str) -> dict[str, set[str]]:
    """Each table `plan_sql` locks (existing before it runs) and the modes its statements take."""
    text = COMMENT.sub(" ", STRING.sub("''", DOLLAR_QUOTED.sub(" ", plan_sql)))
    made = {m.group(1).lower() for pattern in MADE_BY_THE_PLAN for m in pattern.finditer(text)}
    modes: dict[str, set[str]] = {}
    for pattern, mode in LOCKING_STATEMENTS:
        for match in pattern.finditer(text):
            name = match.group(1).lower()
            if name not in made and name not in NEVER_LOCKED:
                modes.setdefault(name, set()).add(mode)
    return modes


def tables_and_mode(plan_sql: str) -> tuple[tuple[str, ...], str]:
    """The tables `plan_sql` locks (existing before it runs), sorted, and one mode covering
    every lock it takes on them."""
    modes = modes_by_table(plan_sql)
    return tuple(sorted(modes)), covering_mode(m for found in modes.values() for m in found)


def covering_mode(modes: Iterable[str]) -> str:
    """The weakest of the three modes that conflicts with everything each of `modes` does.

    Holding it, a later statement's own lock on the table never waits for anyone: ROW EXCLUSIVE
    covers DML; SHARE ROW EXCLUSIVE covers SHARE (CREATE INDEX), CREATE TRIGGER and a foreign
    key's referenced table; anything else (ALTER TABLE, DROP TRIGGER) needs ACCESS EXCLUSIVE.
    """
    found = set(modes)
    if ACCESS_EXCLUSIVE in found:
        return ACCESS_EXCLUSIVE
    if SHARE_ROW_EXCLUSIVE in found:
        return SHARE_ROW_EXCLUSIVE
    return ROW_EXCLUSIVE


def lock_statement(plan_sql: str) -> str:
    """`LOCK TABLE a, b, ... IN <mode> MODE;` for a plan that locks two or more tables, or one
    table in more than one mode, else "".

    One table in one mode has no order to get wrong and nothing to upgrade. One table in two
    modes would be a lock upgrade: a downgrade that builds an index (SHARE) and then alters the
    table (ACCESS EXCLUSIVE) holds the first while it waits for the second, and a writer that
    read the table before (ACCESS SHARE held) and now wants to write (ROW EXCLUSIVE, which waits
    for the SHARE) closes a cycle. Seen on the shared schema: the expand's rollback lost that
    deadlock to old code's writes five times in five.
    """
    modes = modes_by_table(plan_sql)
    if len(modes) < 2 and all(len(found) < 2 for found in modes.values()):
        return ""
    tables, mode = tables_and_mode(plan_sql)
    names = ", ".join(f'"{table}"' for table in tables)
    return f"LOCK TABLE {names} IN {mode} MODE;\n"

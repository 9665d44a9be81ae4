"""The migration lint: squawk over each revision's SQL as the migrator runs it, contract steps,
accepted exceptions by name; bad revisions fail with squawk's message, good ones pass.

Revisions here live in temporary script directories of their own (a chain from base), linted
with no exception accepted unless a test says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from migrations_sqla import lint, scripts
from migrations_sqla.migrator import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_STATEMENT_TIMEOUT,
    Result,
    migrate_schema,
)
from tenants.database_roles import owner_connection

ROOT = Path(__file__).resolve().parents[2]
NONE_ACCEPTED = lint.Exceptions(pg_version="15", accepted={})

REVISION = '''"""Lint test revision {revision}.

Revision ID: {revision}
Revises: {down_revision}
"""

from alembic import op

revision = {revision!r}
down_revision = {down_revision!r}
branch_labels = None
depends_on = None
{declarations}

def upgrade() -> None:
{body}


def downgrade() -> None:
    pass
'''


def script_dir(path: Path, *revisions: tuple[str, list[str], str]) -> str:
    """A script directory holding a chain of revisions from base, each (id, statements, module
    declarations); returns its location."""
    versions = path / "versions"
    versions.mkdir(parents=True)
    down = None
    for revision, statements, declarations in revisions:
        body = "\n".join(f"    op.execute({s!r})" for s in statements) or "    pass"
        source = REVISION.format(
            revision=revision, down_revision=down, declarations=declarations, body=body
        )
        (versions / f"{revision}_{path.name}.py").write_text(source)
        down = revision
    return str(path)


def rules(report: lint.Report) -> set[tuple[str, str]]:
    return {(f.migration, f.rule) for f in report.failures}


def test_a_plain_create_index_fails_the_lint_with_squawks_message(tmp_path: Path) -> None:
    location = script_dir(
        tmp_path,
        ("ci01", ["ALTER TABLE tasks ADD COLUMN estimate bigint"], ""),
        ("ci02", ["CREATE INDEX tasks_estimate ON tasks (estimate)"], ""),
    )

    report = lint.lint(location, django=False, exceptions=NONE_ACCEPTED)

    assert not report.ok
    assert rules(report) == {("ci02", "require-concurrent-index-creation")}
    assert {f.placement for f in report.failures} == {"tenant", "shared"}
    finding = report.failures[0]
    assert finding.message.startswith("During normal index creation, table updates are blocked")
    assert "CREATE INDEX tasks_estimate ON tasks (estimate)" in finding.statement


def test_the_command_fails_and_prints_squawks_message(tmp_path: Path) -> None:
    location = script_dir(tmp_path, ("cm01", ["CREATE INDEX tasks_title ON tasks (title)"], ""))

    done = subprocess.run(
        [sys.executable, "-m", "migrations_sqla.lint", "--location", location, "--no-django"],
        cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, check=False,
    )  # fmt: skip

    assert done.returncode == 1, done.stdout + done.stderr
    assert "(cm01, tenant, shared, line 7 of its SQL)" in done.stdout
    assert "warning[require-concurrent-index-creation]: During normal index creation" in done.stdout
    assert "help: Use `concurrently` to avoid blocking writes." in done.stdout
    assert "squawk: 1 migrations, 1 findings" in done.stdout


def test_an_index_built_concurrently_in_a_declared_step_passes(tmp_path: Path) -> None:
    declared = (
        "non_transactional_upgrade = (\n"
        '    "CREATE INDEX CONCURRENTLY IF NOT EXISTS tasks_effort ON {schema}.tasks (effort)",\n'
        ")\n"
    )
    location = script_dir(
        tmp_path, ("cc01", ["ALTER TABLE tasks ADD COLUMN effort bigint"], declared)
    )

    report = lint.lint(location, django=False, exceptions=NONE_ACCEPTED)

    assert report.ok, [f.describe() for f in report.failures]
    assert report.linted == ["cc01"]


def test_declared_non_transactional_steps_are_linted_too(tmp_path: Path) -> None:
    declared = (
        'non_transactional_upgrade = ("CREATE INDEX CONCURRENTLY tasks_x ON {schema}.tasks (x)",)\n'
    )
    location = script_dir(tmp_path, ("nt01", [], declared))

    report = lint.lint(location, django=False, exceptions=NONE_ACCEPTED)

    assert rules(report) == {("nt01", "prefer-robust-stmts")}  # a retry must find it done
    assert (
        'CREATE INDEX CONCURRENTLY tasks_x ON "tenant".tasks (x);' in report.failures[0].statement
    )


def test_set_not_null_fails_and_a_validated_check_passes(tmp_path: Path) -> None:
    bad = script_dir(
        tmp_path / "bad", ("nn01", ["ALTER TABLE tasks ALTER COLUMN title SET NOT NULL"], "")
    )
    good = script_dir(
        tmp_path / "good",
        (
            "nn11",
            [
                "ALTER TABLE tasks ADD CONSTRAINT tasks_title_not_null"
                " CHECK (title IS NOT NULL) NOT VALID"
            ],
            "",
        ),
        (
            "nn12",
            [
                "ALTER TABLE tasks VALIDATE CONSTRAINT tasks_title_not_null",
                "ALTER TABLE tasks ALTER COLUMN title SET NOT NULL",
            ],
            "",
        ),
    )
    one_transaction = script_dir(
        tmp_path / "one",
        (
            "nn21",
            [
                "ALTER TABLE tasks ADD CONSTRAINT tasks_title_not_null"
                " CHECK (title IS NOT NULL) NOT VALID",
                "ALTER TABLE tasks VALIDATE CONSTRAINT tasks_title_not_null",
            ],
            "",
        ),
    )

    failed = lint.lint(bad, django=False, exceptions=NONE_ACCEPTED)
    assert rules(failed) == {("nn01", "adding-not-nullable-field")}
    assert (
        failed.failures[0].message
        == "Setting a column `NOT NULL` blocks reads while the table is scanned."
    )
    passed = lint.lint(good, django=False, exceptions=NONE_ACCEPTED)
    assert passed.ok, [f.describe() for f in passed.failures]
    # NOT VALID then VALIDATE in one transaction holds the ADD's lock through the scan.
    together = lint.lint(one_transaction, django=False, exceptions=NONE_ACCEPTED)
    assert rules(together) == {("nn21", "constraint-missing-not-valid")}


RENAME_RETYPE_DROP = [
    "ALTER TABLE tasks RENAME COLUMN title TO name",
    "ALTER TABLE tasks ALTER COLUMN priority TYPE bigint",
    "ALTER TABLE tasks DROP COLUMN IF EXISTS due_date",
]


def test_rename_retype_and_drop_fail_outside_a_contract_step(tmp_path: Path) -> None:
    location = script_dir(tmp_path, ("ct01", RENAME_RETYPE_DROP, ""))

    report = lint.lint(location, django=False, exceptions=NONE_ACCEPTED)

    assert rules(report) == {
        ("ct01", "renaming-column"),
        ("ct01", "changing-column-type"),
        ("ct01", "ban-drop-column"),
    }


def test_a_contract_step_may_rename_retype_and_drop_but_nothing_else(tmp_path: Path) -> None:
    allowed = script_dir(tmp_path / "allowed", ("ct11", RENAME_RETYPE_DROP, "contract_step = True"))
    index = ["ALTER TABLE tasks DROP COLUMN IF EXISTS due_date", "DROP INDEX tasks_due_live"]
    plain_drop = script_dir(tmp_path / "index", ("ct21", index, "contract_step = True"))

    assert lint.lint(allowed, django=False, exceptions=NONE_ACCEPTED).ok
    report = lint.lint(plain_drop, django=False, exceptions=NONE_ACCEPTED)
    assert rules(report) == {("ct21", "require-concurrent-index-deletion")}


def test_findings_are_accepted_by_migration_and_rule_and_stale_ones_fail(tmp_path: Path) -> None:
    location = script_dir(
        tmp_path,
        ("ex01", ["CREATE INDEX tasks_title ON tasks (title)"], ""),
        ("ex02", ["CREATE INDEX tasks_status ON tasks (status)"], ""),
    )
    accepted = lint.Exceptions(
        pg_version="15",
        accepted={
            "ex01": {"require-concurrent-index-creation": "written before the lint"},
            "ex02": {"ban-drop-column": "no longer true"},
        },
    )

    report = lint.lint(location, django=False, exceptions=accepted)

    assert {(f.migration, f.rule) for f in report.accepted} == {
        ("ex01", "require-concurrent-index-creation")
    }
    assert rules(report) == {("ex02", "require-concurrent-index-creation")}
    assert report.stale == [("ex02", "ban-drop-column")]


def test_a_revision_that_reads_the_database_is_reported_not_skipped(tmp_path: Path) -> None:
    location = script_dir(tmp_path, ("rd01", [], ""))
    path = next((tmp_path / "versions").glob("rd01_*.py"))
    path.write_text(
        path.read_text().replace(
            "    pass\n\n\ndef downgrade",
            '    op.get_bind().exec_driver_sql("SELECT count(*) FROM tasks")\n\n\ndef downgrade',
        )
    )

    report = lint.lint(location, django=False, exceptions=NONE_ACCEPTED)

    assert rules(report) == {("rd01", lint.UNRENDERED)}
    assert "reads the database: SELECT count(*) FROM tasks" in report.failures[0].message


def test_revisions_render_as_the_migrators_plans_for_each_placement() -> None:
    """Offline SQL per revision is the migrator's plan for that step; 0001 decides in SQL that
    only the shared schema gets its row-level security, so it renders (and compiles) alike."""
    by_id = {r.revision: r for r in lint.revisions_in_order("")}
    for revision in ("0001", "0002", "0003"):
        step = by_id[revision]
        expected = scripts.compile_sql("", step.down_revision, revision, False)  # type: ignore[arg-type]
        assert lint.render_revision("", step, "tenant") == expected
    tenant = lint.render_revision("", by_id["0001"], "tenant")
    shared = lint.render_revision("", by_id["0001"], "shared")
    assert shared == tenant
    assert "IF current_schema() = 'shared' THEN EXECUTE $sql$ALTER TABLE projects ENABLE" in shared
    assert not scripts.plan("", None, "0001").online


def test_django_tenant_app_migrations_are_rendered_by_sqlmigrate(django_db_blocker: Any) -> None:
    with django_db_blocker.unblock():
        documents = {d.migration: d for d in lint.django_documents()}

    assert "contenttypes.0001_initial" in documents
    assert 'CREATE TABLE "django_content_type"' in documents["contenttypes.0001_initial"].sql
    assert all(d.placement == "django" for d in documents.values())


@pytest.fixture
def scratch(unique: str) -> Iterator[str]:
    name = f"t_lint_{unique}"
    with owner_connection() as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    yield name
    with owner_connection() as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_the_migrator_runs_a_revision_under_the_timeouts_the_lint_assumes(
    tmp_path: Path, scratch: str
) -> None:
    """The lint reads a revision as if SET LOCAL lock_timeout / statement_timeout came first
    (and SET before its declared steps): the migrator's own defaults, checked where they run."""
    check = (
        f"DO $$ BEGIN IF current_setting('lock_timeout') <> '{DEFAULT_LOCK_TIMEOUT}'"
        f" OR current_setting('statement_timeout') <> '{DEFAULT_STATEMENT_TIMEOUT}'"
        " THEN RAISE EXCEPTION 'timeouts: % %', current_setting('lock_timeout'),"
        " current_setting('statement_timeout'); END IF; END $$"
    )
    location = script_dir(
        tmp_path, ("tm01", [check], f"non_transactional_upgrade = ({check!r},)\n")
    )

    outcome = migrate_schema(scratch, location=location)

    assert outcome.result == Result.MIGRATED, outcome.error
    document = lint.as_the_migrator_runs_it("SELECT 1;", ["SELECT 2"], scratch)
    assert f"SET LOCAL lock_timeout = '{DEFAULT_LOCK_TIMEOUT}';" in document
    assert f"SET statement_timeout = '{DEFAULT_STATEMENT_TIMEOUT}';" in document

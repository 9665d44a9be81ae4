"""The migration lint: squawk over the SQL of every migration, as the migrator runs it.

Each Alembic revision is rendered on its own by Alembic's offline mode (the SQL from its parent to
it, as `scripts.compile_sql` builds plans) for both placements a migration reaches: a tenant's
schema (the placeholder `tenant`) and the shared schema. The document squawk reads is what the
migrator sends: BEGIN, the transaction-local timeouts, the revision's SQL, COMMIT, then the
statements the revision declares non-transactional, under session timeouts. The migrator issues
its timeouts as `set_config('lock_timeout', ..., true)`, which squawk does not read; the document
says the same thing as `SET LOCAL lock_timeout = ...` (with the migrator's own defaults, which a
test checks inside a migrating revision). So squawk's require-lock-timeout and
require-statement-timeout rules stay on rather than being excluded: they hold wherever the
migrator does not set timeouts, as for Django tenant-app migrations, which are rendered by
`sqlmigrate` and linted as Django runs them (migrate_schemas sets no timeouts).

Only upgrades are linted: a downgrade undoes an expand, and so drops what it added. A revision
that says `contract_step = True` (the last phase of an expand -> contract evolution) may rename,
retype and drop columns: those rules (CONTRACT_STEP_RULES) are off for it alone. Any other
finding fails the lint unless squawk_exceptions.toml accepts it by migration and rule, and an
accepted finding that no longer occurs fails it too, so the list only shrinks.

Run it with `python -m migrations_sqla.lint` (platform/dev.sh test does). sqlmigrate needs a
database connection (Django's, the app role); nothing here writes to a database.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alembic.runtime.environment import EnvironmentContext
from alembic.script import Script

from migrations_sqla import scripts
from tenants.placement import SHARED_SCHEMA

# Imports that need Django's apps are made inside the functions that use them, so that
# `python -m migrations_sqla.lint` can set Django up first (see the end of this module).

EXCEPTIONS = scripts.HERE / "squawk_exceptions.toml"
PLACEHOLDER_SCHEMA = "tenant"  # the TaskFlow models' placeholder; any tenant schema renders alike
# The rules this lint exists for, included explicitly so a squawk upgrade that made one of them
# opt-in would not turn it off; squawk's other default rules apply too.
REQUIRED_RULES = (
    "require-concurrent-index-creation",
    "require-concurrent-index-deletion",
    "require-lock-timeout",
    "require-statement-timeout",
    "adding-not-nullable-field",
    "adding-required-field",
    "constraint-missing-not-valid",
    "renaming-column",
    "changing-column-type",
    "ban-drop-column",
)
CONTRACT_STEP_RULES = ("renaming-column", "changing-column-type", "ban-drop-column")
UNRENDERED = "unrendered"  # the pseudo-rule of a revision whose SQL offline mode cannot render
# Alembic's own bookkeeping in the first revision's SQL: its DDL is Alembic's, not the revision's.
VERSION_TABLE = re.compile(r"^CREATE TABLE alembic_version \(.*?\);\n", re.MULTILINE | re.DOTALL)


@dataclass(frozen=True)
class Document:
    """One migration's SQL for one placement, as it runs."""

    migration: str  # an Alembic revision id, or a Django "app_label.migration_name"
    placement: str  # the schema it was rendered for ("django" for sqlmigrate's)
    source: str  # the file that holds the migration
    sql: str
    contract_step: bool = False

    @property
    def file_name(self) -> str:
        return f"{self.migration}.{self.placement}.sql"


@dataclass(frozen=True)
class Finding:
    """A squawk warning about one document (or a revision that could not be rendered)."""

    migration: str
    placement: str
    source: str
    rule: str
    message: str
    help: str = ""
    line: int = 0  # 1-based, in the document
    statement: str = ""

    def describe(self, placements: Sequence[str] = ()) -> str:
        """Squawk's message, where it applies, and the statement it is about."""
        where = f"{self.source} ({self.migration}, {', '.join(placements or [self.placement])}"
        where += f", line {self.line} of its SQL)" if self.line else ")"
        text = f"{where}: warning[{self.rule}]: {self.message}"
        if self.statement:
            text += "\n    " + self.statement.strip().replace("\n", "\n    ")
        if self.help:
            text += f"\n  help: {self.help}"
        return text


@dataclass
class Report:
    failures: list[Finding] = field(default_factory=list)
    accepted: list[Finding] = field(default_factory=list)
    stale: list[tuple[str, str]] = field(default_factory=list)  # accepted, no longer found
    linted: list[str] = field(default_factory=list)  # migrations, in order

    @property
    def ok(self) -> bool:
        return not self.failures and not self.stale


@dataclass(frozen=True)
class Exceptions:
    """squawk_exceptions.toml: the PostgreSQL version to lint for, and accepted findings."""

    pg_version: str
    accepted: Mapping[str, Mapping[str, str]]  # migration -> rule -> reason

    @classmethod
    def read(cls, path: Path = EXCEPTIONS) -> Exceptions:
        with path.open("rb") as f:
            data = tomllib.load(f)
        return cls(pg_version=str(data["pg_version"]), accepted=data.get("accepted", {}))


def squawk_executable() -> str:
    """The squawk binary that squawk-cli installs beside this interpreter, else the one on PATH."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.exists():
        return str(beside)
    found = shutil.which("squawk")
    if found is None:
        raise RuntimeError("squawk not found: install the dev dependencies (squawk-cli)")
    return found


# -- rendering ------------------------------------------------------------------------------------


class OnlineOnly(Exception):
    """A revision read the database beyond its schema's name: offline SQL cannot say it."""


class _Scalar:
    def __init__(self, value: object) -> None:
        self.value = value

    def scalar(self) -> object:
        return self.value

    scalar_one = scalar


class OfflineBind:
    """What `op.get_bind()` is while rendering: Alembic's mock connection, which also answers
    `SELECT current_schema()` with the placement's schema (revisions branch on it: row-level
    security in the shared schema) and refuses any other read."""

    def __init__(self, connection: Any, schema: str) -> None:
        self._connection = connection
        self._schema = schema

    def exec_driver_sql(self, statement: str, *_args: object, **_kwargs: object) -> _Scalar:
        if " ".join(statement.lower().split()) == "select current_schema()":
            return _Scalar(self._schema)
        raise OnlineOnly(f"reads the database: {statement}")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._connection, name)


def render_revision(location: str, revision: Script, schema: str) -> str:
    """The offline SQL of `revision` alone (from its parent), for `schema` (no timeouts, no BEGIN)."""
    script = scripts.script_directory(location)
    buffer = io.StringIO()
    parent = revision.down_revision

    def steps(_rev: Any, _context: Any) -> Any:
        return script._upgrade_revs(revision.revision, parent)  # type: ignore[arg-type]

    with EnvironmentContext(
        scripts.script_config(location),
        script,
        fn=steps,
        as_sql=True,
        starting_rev=parent,
        destination_rev=revision.revision,
    ) as env:
        env.configure(
            dialect_name="postgresql",
            output_buffer=buffer,
            transactional_ddl=False,
            dialect_opts={"paramstyle": "named"},
        )
        impl = env.get_context().impl
        impl.connection = OfflineBind(impl.connection, schema)  # type: ignore[assignment]
        env.run_migrations()
    return buffer.getvalue()


def as_the_migrator_runs_it(sql: str, non_transactional: Sequence[str], schema: str) -> str:
    """`sql` in the migrator's transaction with its timeouts, then the non-transactional steps."""
    from migrations_sqla.migrator import DEFAULT_LOCK_TIMEOUT, DEFAULT_STATEMENT_TIMEOUT

    lines = [
        "-- the migrator's transaction: set_config(..., true) is SET LOCAL",
        "BEGIN;",
        f"SET LOCAL lock_timeout = '{DEFAULT_LOCK_TIMEOUT}';",
        f"SET LOCAL statement_timeout = '{DEFAULT_STATEMENT_TIMEOUT}';",
        sql.strip(),
        "COMMIT;",
    ]
    if non_transactional:
        lines += [
            "-- declared non-transactional: autocommit after the commit, session timeouts",
            f"SET lock_timeout = '{DEFAULT_LOCK_TIMEOUT}';",
            f"SET statement_timeout = '{DEFAULT_STATEMENT_TIMEOUT}';",
        ]
        for statement in non_transactional:
            rendered = statement.replace("{schema}", f'"{schema}"').strip()
            lines.append(rendered if rendered.endswith(";") else rendered + ";")
        lines += ["RESET lock_timeout;", "RESET statement_timeout;"]
    return "\n".join(lines) + "\n"


def revisions_in_order(location: str) -> list[Script]:
    """Every revision of the script directory, oldest first."""
    return list(reversed(list(scripts.script_directory(location).walk_revisions())))


def alembic_documents(
    location: str = "", placements: Sequence[str] | None = None
) -> Iterator[Document | Finding]:
    """Each revision's document per placement, or a Finding when it cannot be rendered offline."""
    for revision in revisions_in_order(location):
        source = _relative(revision.path)
        contract = getattr(revision.module, "contract_step", False) is True
        statements = scripts.declared_non_transactional([revision], downgrade=False)
        for schema in placements or (PLACEHOLDER_SCHEMA, SHARED_SCHEMA):
            try:
                sql = render_revision(location, revision, schema)
            except Exception as exc:  # any failure to render is the lint's finding, not a crash
                yield Finding(
                    revision.revision, schema, source, UNRENDERED,
                    f"offline mode cannot render this revision ({type(exc).__name__}: {exc})",
                    help="render its SQL without reading the database, or accept it by name",
                )  # fmt: skip
                break
            sql = VERSION_TABLE.sub("", sql, count=1)
            yield Document(
                revision.revision, schema, source,
                as_the_migrator_runs_it(sql, statements, schema), contract_step=contract,
            )  # fmt: skip


def django_documents() -> Iterator[Document]:
    """`sqlmigrate` of every migration of the Django tenant apps, in dependency order."""
    from django.core.management import call_command
    from django.db.migrations.loader import MigrationLoader

    from migrations_sqla.django_state import tenant_app_labels

    loader = MigrationLoader(None, ignore_no_migrations=True)
    labels = tenant_app_labels()
    ordered: list[tuple[str, str]] = []
    for leaf in sorted(loader.graph.leaf_nodes()):
        for node in loader.graph.forwards_plan(leaf):
            if node[0] in labels and node not in ordered:
                ordered.append(node)
    for label, name in ordered:
        out = io.StringIO()
        call_command("sqlmigrate", label, name, stdout=out, no_color=True)
        module = sys.modules[type(loader.disk_migrations[label, name]).__module__]
        source = _relative(module.__file__ or name)
        yield Document(f"{label}.{name}", "django", source, out.getvalue())


def _relative(path: str) -> str:
    try:
        return str(Path(path).resolve().relative_to(scripts.HERE.parent))
    except ValueError:
        return str(path)


# -- linting --------------------------------------------------------------------------------------


def run_squawk(documents: Sequence[Document], *, pg_version: str) -> list[Finding]:
    """Squawk's warnings about `documents`; contract steps without CONTRACT_STEP_RULES."""
    findings: list[Finding] = []
    groups = (
        ([d for d in documents if not d.contract_step], ()),
        ([d for d in documents if d.contract_step], CONTRACT_STEP_RULES),
    )
    with tempfile.TemporaryDirectory(prefix="squawk-") as folder:
        for group, excluded in groups:
            if group:
                findings += _squawk(Path(folder), group, excluded, pg_version)
    return findings


def _squawk(
    folder: Path, documents: Sequence[Document], excluded: Sequence[str], pg_version: str
) -> list[Finding]:
    by_name = {}
    for document in documents:
        (folder / document.file_name).write_text(document.sql)
        by_name[document.file_name] = document
    command = [
        squawk_executable(), "--reporter=json", f"--pg-version={pg_version}",
        "--include=" + ",".join(REQUIRED_RULES),
    ]  # fmt: skip
    if excluded:
        command.append("--exclude=" + ",".join(excluded))
    # Run in the temporary folder: no .squawk.toml of a parent folder applies.
    done = subprocess.run(
        [*command, *by_name], cwd=folder, capture_output=True, text=True, check=False
    )
    try:
        violations = json.loads(done.stdout or "[]")
    except json.JSONDecodeError:
        violations = None
    if done.returncode not in (0, 1) or not isinstance(violations, list):
        raise RuntimeError(f"squawk failed ({done.returncode}): {done.stderr or done.stdout}")
    findings = []
    for violation in violations:
        document = by_name[Path(violation["file"]).name]
        first, last = violation["line"], violation.get("line_end", violation["line"])
        statement = "\n".join(document.sql.splitlines()[first : last + 1])
        finding = Finding(
            document.migration, document.placement, document.source,
            violation["rule_name"], violation["message"], violation.get("help") or "",
            line=first + 1, statement=statement,
        )  # fmt: skip
        findings.append(finding)
    return findings


def lint(
    location: str = "", *, django: bool = True, exceptions: Exceptions | None = None
) -> Report:
    """Squawk over every revision of `location` ("" is migrations_sqla's) and, with `django`, the
    Django tenant apps' migrations; findings split by the accepted exceptions."""
    exceptions = exceptions or Exceptions.read()
    report = Report()
    documents: list[Document] = []
    unrendered: list[Finding] = []
    items: Iterable[Document | Finding] = alembic_documents(location)
    if django:
        items = [*items, *django_documents()]
    for item in items:
        if isinstance(item, Document):
            documents.append(item)
        else:
            unrendered.append(item)
        if item.migration not in report.linted:
            report.linted.append(item.migration)
    seen: set[tuple[str, str]] = set()
    for finding in unrendered + run_squawk(documents, pg_version=exceptions.pg_version):
        key = (finding.migration, finding.rule)
        seen.add(key)
        if finding.rule in exceptions.accepted.get(finding.migration, {}):
            report.accepted.append(finding)
        else:
            report.failures.append(finding)
    order = {migration: i for i, migration in enumerate(report.linted)}
    placements = {PLACEHOLDER_SCHEMA: 0, SHARED_SCHEMA: 1}

    def reading_order(f: Finding) -> tuple[int, int, int, str]:
        return order.get(f.migration, -1), placements.get(f.placement, 2), f.line, f.rule

    report.failures.sort(key=reading_order)
    report.accepted.sort(key=reading_order)
    for migration in report.linted:
        for rule in exceptions.accepted.get(migration, {}):
            if (migration, rule) not in seen:
                report.stale.append((migration, rule))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(
        prog="python -m migrations_sqla.lint",
        description="Squawk over the SQL of every Alembic revision and Django tenant-app migration.",
    )
    parser.add_argument("--location", default="", help="an Alembic script directory")
    parser.add_argument("--no-django", action="store_true", help="Alembic revisions only")
    args = parser.parse_args(argv)

    report = lint(args.location, django=not args.no_django)
    # The same statement in both placements is one finding to read.
    placements: dict[tuple[str, str, str, str], list[str]] = {}
    first: dict[tuple[str, str, str, str], Finding] = {}
    for finding in report.failures:
        key = (finding.migration, finding.rule, finding.message, finding.statement)
        placements.setdefault(key, []).append(finding.placement)
        first.setdefault(key, finding)
    for key, finding in first.items():
        print(finding.describe(placements[key]), end="\n\n")
    for migration, rule in report.stale:
        print(f"{EXCEPTIONS.name}: {migration} {rule} is accepted but no longer found: remove it")
    accepted = sorted({(f.migration, f.rule) for f in report.accepted})
    print(
        f"squawk: {len(report.linted)} migrations, {len(first)} findings,"
        f" {len(accepted)} accepted exceptions, {len(report.stale)} stale"
    )
    if report.failures:
        print(
            "A finding is fixed in the migration; a contract step says `contract_step = True`;"
            f" a finding that must stay is accepted by name in migrations_sqla/{EXCEPTIONS.name}."
        )
    return 0 if report.ok else 1


if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "control_plane.settings")
    import django

    django.setup()
    sys.exit(main())

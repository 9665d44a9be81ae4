"""`manage.py fanout_migrate`: start a migration run, and with --wait watch it to the end.

Exits non-zero when the run fails or is cancelled, or is still going after --timeout, so scripts
and CI can gate on it. The watch survives a database blip (it reconnects and carries on: the run
itself goes on in the workers) and says so when no worker consumes the migrations queue. A run
that takes schemas to an older revision needs --yes-downgrade or a typed confirmation.
"""

from __future__ import annotations

import getpass
import socket
import sys
import time
from collections.abc import Callable
from typing import Any

from django import db
from django.core.management.base import BaseCommand, CommandError, CommandParser

from control_plane.fanout import runs
from control_plane.fanout.models import MigrationRun, RunStatus
from control_plane.management.progress import Deadline, ProgressLine, WorkerWatch, bar
from tenants.problems import Problem

POLL_S = 0.5
RECONNECT_CAP_S = 5.0
QUEUE = "migrations"


class Command(BaseCommand):
    help = "Migrate tenant schemas through the fan-out (template first, canaries, then batches)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenants", default="", help="Comma-separated slugs (default: all).")
        parser.add_argument("--to", default="head", help="Alembic revision (default: head).")
        parser.add_argument("--canary", type=int, default=1, help="Canary tenants first.")
        parser.add_argument("--concurrency", type=int, default=2, help="Batches in flight.")
        parser.add_argument("--batch-size", type=int, default=50, help="Tenants per batch task.")
        parser.add_argument(
            "--max-failures", default="0", help="Failure budget: a count (3) or a percentage (5%%)."
        )
        parser.add_argument("--lock-timeout", default="5s")
        parser.add_argument("--statement-timeout", default="5min")
        parser.add_argument(
            "--verify", action="store_true", help="Read version tables, not recorded revisions."
        )
        parser.add_argument(
            "--script-location", default=None, help="Another Alembic script directory."
        )
        parser.add_argument("--wait", action="store_true", help="Watch the run until it ends.")
        parser.add_argument(
            "--timeout", type=float, default=None, metavar="SECONDS",
            help="With --wait: give up watching (exit 2) after SECONDS; the run goes on.",
        )  # fmt: skip
        parser.add_argument(
            "--yes-downgrade", action="store_true",
            help="Confirm a run that takes schemas to an older revision.",
        )  # fmt: skip
        parser.add_argument(
            "--resume", type=int, default=None, metavar="RUN", help="Resume run RUN instead."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["resume"] is not None:
                found = MigrationRun.objects.filter(pk=options["resume"]).first()
                if found is None:
                    raise CommandError(f"no migration run {options['resume']}")

                def start(yes: bool) -> MigrationRun:
                    assert found is not None
                    return runs.resume_run(found, allow_downgrade=yes)
            else:
                slugs = [s for s in options["tenants"].split(",") if s.strip()]

                def start(yes: bool) -> MigrationRun:
                    return runs.start_run(
                        tenants=slugs or None,
                        to=options["to"],
                        canary=options["canary"],
                        concurrency=options["concurrency"],
                        batch_size=options["batch_size"],
                        max_failures=options["max_failures"],
                        verify=options["verify"],
                        lock_timeout=options["lock_timeout"],
                        statement_timeout=options["statement_timeout"],
                        script_location=options["script_location"],
                        allow_downgrade=yes,
                        started_from=started_from(),
                    )

            run = self.confirmed(start, yes=options["yes_downgrade"])
        except Problem as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(f"migration run {run.pk} started")
        if options["wait"]:
            self.watch(run, timeout=options["timeout"])

    def confirmed(self, start: Callable[[bool], MigrationRun], *, yes: bool) -> MigrationRun:
        """`start(allow_downgrade)`; a downgrade needs --yes-downgrade, or at a terminal the
        word typed in, else the command stops before anything is queued."""
        try:
            return start(yes)
        except runs.DowngradeNotConfirmed as exc:
            if not sys.stdin.isatty():
                raise CommandError(f"{exc.detail} Pass --yes-downgrade to confirm.") from exc
            self.stdout.write(exc.detail)
            if input("Type 'downgrade' to go ahead: ").strip() != "downgrade":
                raise CommandError("Downgrade not confirmed; nothing started.") from exc
            return start(True)

    def patiently(self, read: Callable[[], Any]) -> Any:
        """`read()`, again and again while the database does not answer."""
        outage = 0
        while True:
            try:
                return read()
            except (db.OperationalError, db.InterfaceError) as exc:
                outage = self.database_gone(exc, outage)

    def database_gone(self, exc: Exception, outage: int) -> int:
        """Say once that the database went away, drop the broken connection, back off."""
        if not outage:
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            self.stderr.write(f"database unavailable ({first}); reconnecting, the run goes on")
        db.connections.close_all()
        time.sleep(min(RECONNECT_CAP_S, 0.5 * 2**outage))
        return outage + 1

    def watch(self, run: MigrationRun, *, timeout: float | None = None) -> None:
        progress = ProgressLine(self.stdout)
        workers = WorkerWatch(QUEUE, self.stderr, what=f"run {run.pk}")
        deadline = Deadline(timeout)
        outage = 0
        while True:
            try:
                run.refresh_from_db()
                state = runs.run_state(run, limit=0)
            except (db.OperationalError, db.InterfaceError) as exc:
                outage = self.database_gone(exc, outage)
                state = None
            else:
                if outage:
                    self.stderr.write("database answers again; still watching")
                    outage = 0
            if state is not None:
                if progress.show(progress_line(state)):
                    workers.moving()
                if state["finished"]:
                    break
                workers.check()
            if deadline.passed():
                progress.close()
                raise CommandError(
                    f"gave up watching after {timeout:g}s; run {run.pk} goes on", returncode=2
                )
            time.sleep(POLL_S)
        progress.close()
        failed = self.patiently(lambda: runs.run_state(run, status="failed")["steps"])
        for step in failed:
            self.stdout.write(f"  failed {step['schema']}: {step['error']}")
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"run {run.pk} {run.status}: {run.error}")
        self.stdout.write(f"run {run.pk} succeeded: every tenant at {run.target}")


def progress_line(state: dict[str, Any]) -> str:
    """`[#####.....]  50%  500/1000  succeeded 480 skipped 20 failed 0 running 50  rollout`."""
    counts = state["counts"]
    return (
        f"{bar(state['progress'])} {state['progress'] * 100:5.1f}%  {counts['done']}/{counts['total']}"
        f"  succeeded {counts['succeeded']} skipped {counts['skipped']}"
        f" failed {counts['failed']} running {counts['running']}"
        f"  {state['stage']} ({state['status']})"
    )


def started_from() -> str:
    """`cli: user@host`, recorded on the run so the admin shows who started it."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"cli: {user}@{socket.gethostname()}"

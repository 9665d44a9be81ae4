"""`manage.py fanout_migrate`: start a migration run, and with --wait watch it to the end.

Exits non-zero when the run fails or is cancelled, so scripts and CI can gate on it.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from control_plane.fanout import runs
from control_plane.fanout.models import MigrationRun, RunStatus
from tenants.problems import Problem

BAR_WIDTH = 30
POLL_S = 0.5


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
            "--resume", type=int, default=None, metavar="RUN", help="Resume run RUN instead."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            if options["resume"] is not None:
                run = MigrationRun.objects.filter(pk=options["resume"]).first()
                if run is None:
                    raise CommandError(f"no migration run {options['resume']}")
                run = runs.resume_run(run)
            else:
                slugs = [s for s in options["tenants"].split(",") if s.strip()]
                run = runs.start_run(
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
                )
        except Problem as exc:
            raise CommandError(exc.detail) from exc
        self.stdout.write(f"migration run {run.pk} started")
        if options["wait"]:
            self.watch(run)

    def watch(self, run: MigrationRun) -> None:
        live = self.stdout.isatty() if hasattr(self.stdout, "isatty") else sys.stdout.isatty()
        last = ""
        while True:
            run.refresh_from_db()
            state = runs.run_state(run, limit=0)
            line = progress_line(state)
            if live:
                self.stdout.write("\r" + line, ending="")
                self.stdout.flush()
            elif line != last:
                self.stdout.write(line)
            last = line
            if state["finished"]:
                break
            time.sleep(POLL_S)
        if live:
            self.stdout.write("")
        failed = runs.run_state(run, status="failed")["steps"]
        for step in failed:
            self.stdout.write(f"  failed {step['schema']}: {step['error']}")
        if run.status != RunStatus.SUCCEEDED:
            raise CommandError(f"run {run.pk} {run.status}: {run.error}")
        self.stdout.write(f"run {run.pk} succeeded: every tenant at {run.target}")


def progress_line(state: dict[str, Any]) -> str:
    """`[#####.....]  50%  500/1000  succeeded 480 skipped 20 failed 0 running 50  rollout`."""
    counts = state["counts"]
    filled = int(state["progress"] * BAR_WIDTH)
    bar = "#" * filled + "." * (BAR_WIDTH - filled)
    return (
        f"[{bar}] {state['progress'] * 100:5.1f}%  {counts['done']}/{counts['total']}"
        f"  succeeded {counts['succeeded']} skipped {counts['skipped']}"
        f" failed {counts['failed']} running {counts['running']}"
        f"  {state['stage']} ({state['status']})"
    )

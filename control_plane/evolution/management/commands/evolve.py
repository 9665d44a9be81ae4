"""`manage.py evolve NAME PHASE`: start (or roll back, cancel, resume) an evolution's phase.

PHASE is expand, backfill, switch, contract, or status. With --wait the command watches the
phase's fan-outs to the end (a progress bar per run, the contract's two runs in turn) and exits
non-zero when one fails or is cancelled, or after --timeout; it says when no worker consumes the
migrations queue (control_plane.management.progress, as every --wait). Rolling back needs --yes
(or the word typed at a terminal); overriding a closed contract gate needs --override-gate and
the same confirmation.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from django import db
from django.core.management.base import BaseCommand, CommandError, CommandParser

from control_plane.evolution import phases
from control_plane.evolution.models import PHASE_ORDER, Evolution, EvolutionRun
from control_plane.fanout.management.commands.fanout_migrate import QUEUE, progress_line
from control_plane.management.progress import Deadline, ProgressLine, WorkerWatch
from tenants.problems import Problem

POLL_S = 0.5
RECONNECT_CAP_S = 5.0


class Command(BaseCommand):
    help = "Run an evolution's phase (expand, backfill, switch, contract) over every schema."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("name", help="The evolution (e.g. tasks_due_at).")
        parser.add_argument("phase", choices=[*PHASE_ORDER, "status"])
        parser.add_argument("--rollback", action="store_true", help="Undo the expand or switch.")
        parser.add_argument("--cancel", action="store_true", help="Cancel the running phase.")
        parser.add_argument("--resume", action="store_true", help="Resume the stopped phase.")
        parser.add_argument(
            "--override-gate", action="store_true",
            help="Start the contract although its gate is closed (needs confirming).",
        )  # fmt: skip
        parser.add_argument("--yes", action="store_true", help="Confirm without asking.")
        parser.add_argument("--concurrency", type=int, default=None)
        parser.add_argument("--batch-size", type=int, default=None, help="Schemas per batch.")
        parser.add_argument("--batch-rows", type=int, default=None, help="Rows per backfill txn.")
        parser.add_argument("--throttle-ms", type=int, default=None, help="Sleep between batches.")
        parser.add_argument("--lock-timeout", default=None)
        parser.add_argument("--wait", action="store_true", help="Watch the phase to its end.")
        parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS")
        parser.add_argument("--json", action="store_true", help="status: print the state as JSON.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            evolution = phases.get_evolution(options["name"])
            self._options(evolution, options)
            phase = options["phase"]
            if phase == "status":
                state = phases.evolution_state(evolution)
                if options["json"]:
                    self.stdout.write(json.dumps(state, indent=2, default=str))
                else:
                    self._summary(state)
                return
            if options["cancel"]:
                stopped = phases.cancel(evolution)
                self.stdout.write(
                    f"{evolution.name}: {stopped.phase} cancelled (run {stopped.run_id})"
                )
                return
            record: EvolutionRun | None
            if options["resume"]:
                record = phases.resume(evolution)
                self.stdout.write(f"{evolution.name}: {record.phase} resumed (run {record.run_id})")
            elif options["rollback"]:
                confirm = self._confirm(options, f"roll back the {phase} of {evolution.name}")
                record = phases.rollback(evolution, phase, confirm=confirm)
                self.stdout.write(f"{evolution.name}: {phase} rollback started")
            else:
                confirm = False
                if options["override_gate"]:
                    confirm = self._confirm(options, "override the contract gate")
                record = phases.start_phase(
                    evolution, phase, override=options["override_gate"], confirm=confirm
                )
                self.stdout.write(
                    f"{evolution.name}: {phase} "
                    + (f"started (run {record.run_id})" if record else "already done")
                )
        except Problem as exc:
            raise CommandError(exc.detail) from exc
        except (db.OperationalError, db.InterfaceError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise CommandError(f"database unavailable, nothing started: {first}") from exc
        if options["wait"] and record is not None:
            self.watch(evolution, timeout=options["timeout"])

    def _options(self, evolution: Evolution, options: dict[str, Any]) -> None:
        given = {
            key: options[key]
            for key in ("concurrency", "batch_size", "batch_rows", "throttle_ms", "lock_timeout")
            if options[key] is not None
        }
        if given:
            phases.set_options(evolution, given)

    def _confirm(self, options: dict[str, Any], what: str) -> bool:
        if options["yes"]:
            return True
        if not sys.stdin.isatty():
            raise CommandError(f"Confirm that you {what}: pass --yes.")
        if input(f"Type 'yes' to {what}: ").strip() != "yes":
            raise CommandError("Not confirmed; nothing started.")
        return True

    def _summary(self, state: dict[str, Any]) -> None:
        done = [p["phase"] for p in state["phases"] if p["done"]]
        self.stdout.write(
            f"{state['name']}: completed {state['completed'] or '-'} ({', '.join(done) or 'none'}),"
            f" {state['status']}; switch {state['switch']['name']}={state['switch']['value']};"
            f" contract gate {'open' if state['contract_gate']['open'] else 'closed'}"
        )
        for reason in state["contract_gate"]["reasons"]:
            self.stdout.write(f"  gate: {reason}")

    def watch(self, evolution: Evolution, *, timeout: float | None) -> None:
        progress = ProgressLine(self.stdout)
        workers = WorkerWatch(QUEUE, self.stderr, what=f"evolution {evolution.name}")
        deadline = Deadline(timeout)
        outage, run_id = 0, None
        while True:
            try:
                state = phases.evolution_state(evolution)
                outage = 0
            except (db.OperationalError, db.InterfaceError) as exc:
                if not outage:
                    self.stderr.write(f"database unavailable ({exc}); reconnecting")
                db.connections.close_all()
                time.sleep(min(RECONNECT_CAP_S, 0.5 * 2**outage))
                outage += 1
                continue
            current = state["current"]
            if current and current["run"] != run_id:
                if run_id is not None:
                    progress.close()  # each run's bar keeps its own line
                run_id = current["run"]
            if current:
                line = (
                    f"{current['action']} {current['phase']}.{current['step']} run {run_id} "
                    + progress_line({**current, "status": current["status"]})
                    + (f"  rows {current['rows_written']}" if current["rows_written"] else "")
                )
                if progress.show(line):
                    workers.moving()
            if state["finished"]:
                break
            workers.check()
            if deadline.passed():
                progress.close()
                raise CommandError(f"gave up watching after {timeout:g}s; it goes on", returncode=2)
            time.sleep(POLL_S)
        progress.close()
        if state["status"] != "idle":
            error = current["error"] if current else ""
            raise CommandError(f"{evolution.name}: {state['status']}: {error}")
        self.stdout.write(
            f"{evolution.name}: completed {state['completed'] or 'nothing (rolled back)'}"
        )

"""`manage.py import_tasks SLUG FILE [--mode ...] [--wait]`: import a CSV file into a tenant.

Goes through the same service as the API (the file is copied to the upload folder and a worker
runs the job); with --wait it shows a progress bar and exits non-zero if the import fails.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from control_plane.imports import services
from control_plane.imports.models import ImportJob, ImportMode, ImportStatus
from control_plane.imports.uploads import read_chunks, store_chunks
from taskflow.imports.entry import InvalidHeader
from tenants.models import Tenant

BAR_WIDTH = 30
POLL_SECONDS = 0.5


class Command(BaseCommand):
    help = "Import tasks from a CSV file into a tenant through a worker (queue imports)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The tenant's slug.")
        parser.add_argument("file", type=Path, help="A UTF-8 CSV file with a header row.")
        parser.add_argument(
            "--mode", choices=("all-or-nothing", "skip-invalid"), default="all-or-nothing"
        )
        parser.add_argument("--wait", action="store_true", help="Wait and show progress.")
        parser.add_argument("--key", default=None, help="An idempotency key for the job.")
        parser.add_argument(
            "--timeout", type=float, default=0, help="Seconds to wait (0: no limit)."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["slug"]).first()
        if tenant is None or tenant.is_public:
            raise CommandError(f"no tenant {options['slug']!r}")
        source: Path = options["file"]
        if not source.is_file():
            raise CommandError(f"no file {source}")
        try:
            with source.open("rb") as file:
                upload = store_chunks(read_chunks(file), tenant_id=tenant.pk, name=source.name)
        except InvalidHeader as exc:
            raise CommandError(exc.detail) from exc
        mode = options["mode"].replace("-", "_")
        requested = services.request_import(
            tenant=tenant, upload=upload, mode=ImportMode(mode), idempotency_key=options["key"]
        )
        job = requested.job
        self.stdout.write(f"import {job.pk} of {source.name} into {tenant.slug}: {job.status}")
        if options["wait"]:
            self.wait(job, options["timeout"])

    def wait(self, job: ImportJob, timeout: float) -> None:
        deadline = time.monotonic() + timeout if timeout else None
        tty = sys.stdout.isatty()
        shown = ""
        while True:
            job.refresh_from_db()
            line = progress_line(job)
            if line != shown:
                self.stdout.write(("\r" + line) if tty else line, ending="" if tty else "\n")
                self.stdout.flush()
                shown = line
            if job.is_finished:
                break
            if deadline is not None and time.monotonic() > deadline:
                raise CommandError(
                    f"import {job.pk} still {job.status} after {timeout:.0f}s; is a worker"
                    " consuming the imports queue?"
                )
            time.sleep(POLL_SECONDS)
        if tty:
            self.stdout.write("")
        if job.status != ImportStatus.SUCCEEDED:
            report = f" (error report: {job.errors_path})" if job.rejected else ""
            raise CommandError(f"import {job.pk} {job.status}: {job.error}{report}")
        self.stdout.write(
            f"import {job.pk} succeeded: {job.rows_read} rows, {job.inserted} inserted,"
            f" {job.updated} updated, {job.unchanged} unchanged, {job.rejected} rejected"
        )


def progress_line(job: ImportJob) -> str:
    done = round(BAR_WIDTH * job.progress / 100)
    bar = "#" * done + "." * (BAR_WIDTH - done)
    rate = f" {job.rows_per_second:,.0f} rows/s" if job.rows_per_second else ""
    phase = f" {job.phase}" if job.phase else ""
    return f"[{bar}] {job.progress:5.1f}% {job.status}{phase} {job.rows_read:,} rows{rate}"

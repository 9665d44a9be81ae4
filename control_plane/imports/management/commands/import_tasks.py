"""`manage.py import_tasks SLUG FILE [--mode ...] [--wait]`: import a CSV file into a tenant.

Goes through the same service as the API (the file is copied to the upload folder and a worker
runs the job); with --wait it shows a progress bar and exits non-zero if the import fails.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from control_plane.imports import services
from control_plane.imports.models import ImportJob, ImportMode, ImportStatus
from control_plane.imports.uploads import read_chunks, store_chunks
from control_plane.management.progress import Deadline, ProgressLine, WorkerWatch, bar
from control_plane.worker.queues import queue_consumers
from taskflow.imports.entry import InvalidHeader
from tenants.models import Tenant

POLL_SECONDS = 0.5
QUEUE = "imports"
# The API's spelling (documented) and the hyphenated one the CLI had: both accepted.
MODES = {
    "all_or_nothing": ImportMode.ALL_OR_NOTHING,
    "all-or-nothing": ImportMode.ALL_OR_NOTHING,
    "skip_invalid": ImportMode.SKIP_INVALID,
    "skip-invalid": ImportMode.SKIP_INVALID,
}


class Command(BaseCommand):
    help = "Import tasks from a CSV file into a tenant through a worker (queue imports)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The tenant's slug.")
        parser.add_argument("file", type=Path, help="A UTF-8 CSV file with a header row.")
        parser.add_argument(
            "--mode",
            choices=MODES,
            default="all_or_nothing",
            metavar="{all_or_nothing,skip_invalid}",
            help="What a bad row does: fail the import, or be skipped and reported.",
        )
        parser.add_argument("--wait", action="store_true", help="Wait and show progress.")
        parser.add_argument("--key", default=None, help="An idempotency key for the job.")
        parser.add_argument(
            "--timeout",
            type=float,
            default=0,
            help="With --wait: give up waiting (exit 2) after SECONDS (0: no limit); the job goes on.",
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
        requested = services.request_import(
            tenant=tenant,
            upload=upload,
            mode=MODES[options["mode"]],
            idempotency_key=options["key"],
        )
        job = requested.job
        self.stdout.write(f"import {job.pk} of {source.name} into {tenant.slug}: {job.status}")
        if options["wait"]:
            self.wait(job, options["timeout"])

    def wait(self, job: ImportJob, timeout: float) -> None:
        progress = ProgressLine(self.stdout)
        workers = WorkerWatch(QUEUE, self.stderr, what=f"import {job.pk}")
        deadline = Deadline(timeout)
        while True:
            job.refresh_from_db()
            if progress.show(progress_line(job)):
                workers.moving()
            if job.is_finished:
                break
            workers.check()
            if deadline.passed():
                progress.close()
                raise CommandError(
                    f"import {job.pk} still {job.status} after {timeout:g}s; it goes on"
                    + (
                        ""
                        if queue_consumers(QUEUE)
                        else f" once a worker consumes the {QUEUE} queue"
                    ),
                    returncode=2,
                )
            time.sleep(POLL_SECONDS)
        progress.close()
        report = error_report_location(job)
        if job.status != ImportStatus.SUCCEEDED:
            raise CommandError(f"import {job.pk} {job.status}: {job.error}{report}")
        self.stdout.write(
            f"import {job.pk} succeeded: {job.rows_read:,} rows, {job.inserted:,} inserted,"
            f" {job.updated:,} updated, {job.unchanged:,} unchanged, {job.rejected:,} rejected{report}"
        )


def error_report_location(job: ImportJob) -> str:
    """Where the rejected rows are: the file, and the API path a tenant's user downloads it from."""
    if not job.rejected or not job.errors_path:
        return ""
    return f" (error report: {job.errors_path}; API: /api/v1/imports/{job.pk}/errors)"


def progress_line(job: ImportJob) -> str:
    rate = f" {job.rows_per_second:,.0f} rows/s" if job.rows_per_second else ""
    phase = f" {job.phase}" if job.phase else ""
    return f"{bar(job.progress / 100)} {job.progress:5.1f}% {job.status}{phase} {job.rows_read:,} rows{rate}"

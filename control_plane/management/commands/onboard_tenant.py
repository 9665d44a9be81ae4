"""`manage.py onboard_tenant SLUG ...`: onboard a tenant and wait until it is provisioned."""

from __future__ import annotations

import time
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from control_plane.management.progress import Deadline, WorkerWatch
from control_plane.tenancy.lifecycle import LifecycleConflict
from control_plane.tenancy.onboarding import InvalidOnboarding, submit_onboarding
from control_plane.worker.queues import queue_consumers
from tenants.models import Isolation, Tenant, TenantStatus

QUEUE = "default"


class Command(BaseCommand):
    help = "Onboard a tenant through the onboarding service and print its domain and owner token."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--name", required=True)
        parser.add_argument("--domain", required=True)
        parser.add_argument("--isolation", choices=Isolation.values, default=Isolation.SCHEMA)
        parser.add_argument("--owner-email", required=True)
        parser.add_argument(
            "--timeout", type=float, default=60.0,
            help="Seconds to wait for provisioning (exit 2 after; the onboarding goes on).",
        )  # fmt: skip
        parser.add_argument(
            "--idempotency-key", default=None,
            help="Run again with the same key: the same onboarding, not a second tenant.",
        )  # fmt: skip

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            # A replayed --idempotency-key skips validation: its tenant already took the slug.
            requested = submit_onboarding(
                fields={
                    field: options[field]
                    for field in ("name", "slug", "domain", "isolation", "owner_email")
                },
                idempotency_key=options["idempotency_key"],
            )
        except InvalidOnboarding as exc:
            reasons = "; ".join(f"{field}: {' '.join(msgs)}" for field, msgs in exc.errors.items())
            raise CommandError(f"invalid onboarding request: {reasons}") from exc
        except LifecycleConflict as exc:
            raise CommandError(str(exc)) from exc
        # The token is shown once: printed before waiting, so a wait that ends badly keeps it.
        onboarding = requested.onboarding
        self.stdout.write(f"domain:    {onboarding.domain}")
        self.stdout.write(f"owner:     {onboarding.owner_email}")
        self.stdout.write(f"token:     {requested.token or requested.token_note}")
        self.stdout.write("(the token is shown once; store it now)")
        tenant = self.wait(onboarding.tenant.pk, options["timeout"])
        self.stdout.write(f"tenant:    {tenant.slug} ({tenant.isolation}, {tenant.status})")

    def wait(self, tenant_id: int, timeout: float) -> Tenant:
        deadline = Deadline(timeout)
        workers = WorkerWatch(QUEUE, self.stderr, what="provisioning")
        while True:
            tenant = Tenant.objects.get(pk=tenant_id)
            if tenant.status == TenantStatus.ACTIVE:
                return tenant
            if tenant.status == TenantStatus.FAILED:
                raise CommandError(f"provisioning failed: {tenant.status_reason}")
            workers.check()
            if deadline.passed():
                nobody = "" if queue_consumers(QUEUE) else f"; no worker consumes the {QUEUE} queue"
                raise CommandError(
                    f"tenant {tenant.slug!r} still {tenant.status} after {timeout:g}s{nobody};"
                    " the token above stays valid once it is provisioned",
                    returncode=2,
                )
            time.sleep(0.1)

"""`manage.py move_tenant SLUG --to schema|rls`: move a tenant's data between placements.
`manage.py move_tenant SLUG --to-node HOST:PORT`: on a Citus cluster, move a schema tenant's
distributed schema to another node (citus_schema_move under the tenant's write lock).

Either move is recorded (a TenantMove, visible in the admin) and runs in this process; a refused
move is recorded failed with its reason, and the command exits non-zero with it. A node move is
recorded before anything changes; one whose process was killed is recorded failed by the next
(tenants.row_security says whether one is live, and forces row-level security again).
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone

from control_plane.tenancy.models import MoveStatus, TenantMove
from control_plane.tenancy.moves import (
    NODE_MOVE,
    MoveInProgress,
    close_interrupted_node_moves,
    request_move,
    run_move,
)
from tenants.models import Isolation, Tenant
from tenants.moving import move_tenant_to_node
from tenants.problems import Problem


class Command(BaseCommand):
    help = "Copy a tenant's rows (history included) to the other placement, switch, then clean up."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--to", choices=Isolation.values)
        where.add_argument("--to-node", metavar="HOST:PORT", help="a Citus worker (or coordinator)")

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=options["slug"]).exclude(schema_name="public").first()
        if tenant is None:
            raise CommandError(f"no tenant {options['slug']!r}")
        if options["to_node"]:
            self._to_node(tenant, options["to_node"])
            return
        try:
            move = request_move(tenant, options["to"], via="cli", send=False)
        except MoveInProgress as exc:
            raise CommandError(exc.detail) from exc
        if move.status == MoveStatus.QUEUED:
            move = run_move(move.pk)
        if move.status != MoveStatus.DONE:
            raise CommandError(
                f"move {move.pk} {move.status}: {move.error} The tenant stays in {move.source} mode."
            )
        rows = ", ".join(f"{table} {count}" for table, count in move.rows.items())
        self.stdout.write(
            f"moved {tenant.slug} from {move.source} to {move.target} in {move.seconds}s"
            f" (move {move.pk})"
        )
        self.stdout.write(f"rows: {rows}")
        if move.error:
            self.stdout.write(self.style.WARNING(move.error))

    def _to_node(self, tenant: Tenant, node: str) -> None:
        host, _, port = node.rpartition(":")
        if not host or not port.isdigit():
            raise CommandError(f"--to-node takes HOST:PORT, not {node!r}")
        close_interrupted_node_moves(tenant)
        move = TenantMove.objects.create(
            tenant=tenant,
            source=NODE_MOVE,
            target=NODE_MOVE,
            status=MoveStatus.COPYING,
            requested_via="cli",
            started_at=timezone.now(),
            attempts=1,
        )
        try:
            report = move_tenant_to_node(tenant, host, int(port))
        except Exception as exc:
            detail = exc.detail if isinstance(exc, Problem) else f"{type(exc).__name__}: {exc}"
            TenantMove.objects.filter(pk=move.pk).update(
                status=MoveStatus.FAILED, error=str(detail)[:4000], finished_at=timezone.now()
            )
            raise CommandError(f"move {move.pk} failed: {detail}") from exc
        TenantMove.objects.filter(pk=move.pk).update(
            status=MoveStatus.DONE,
            rows={"node": {"from": report.source, "to": report.target}, **report.rows},
            seconds=report.seconds,
            finished_at=timezone.now(),
        )
        self.stdout.write(
            f"moved {tenant.slug} ({report.schema}) from {report.source} to {report.target}"
            f" in {report.seconds}s (move {move.pk})"
        )

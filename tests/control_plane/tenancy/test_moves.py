"""Moves as recorded jobs: requested, claimed once, refused with a reason, recovered when stranded.

A real move by a worker (and by the CLI) is in tests/tenants/test_moving.py; these need no worker.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from control_plane.tenancy import moves
from control_plane.tenancy.models import MoveStatus, TenantMove
from control_plane.worker import recovery
from tenants.models import Isolation, TenantStatus
from tests.control_plane.admin_support import HOST, reverse, run_action, texts
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db


def test_a_move_of_an_archived_tenant_is_recorded_failed_with_the_reason(
    operator: Client, unique: str
) -> None:
    archived = make_tenant(f"a{unique}", status=TenantStatus.ARCHIVED)
    response = run_action(operator, "tenants_tenant", "move_to_rls", archived.pk)
    move = TenantMove.objects.get(tenant=archived)
    assert move.status == MoveStatus.FAILED
    assert move.error == f"Tenant 'a{unique}' is archived; only provisioned tenants move."
    assert move.finished_at is not None
    assert texts(response) == [f"Move {move.pk} refused: {move.error}"]
    listing = operator.get(reverse("admin:control_plane_tenantmove_changelist"), HTTP_HOST=HOST)
    assert listing.status_code == 200
    assert move.error.replace("'", "&#x27;") in listing.content.decode()
    assert "data-live-refresh" not in listing.content.decode()  # nothing running: no reloads


def test_a_queued_move_is_sent_once_committed_and_one_move_per_tenant_is_active(
    operator: Client,
    unique: str,
    django_capture_on_commit_callbacks: Callable[..., Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = make_tenant(f"m{unique}")
    sent: list[int] = []
    monkeypatch.setattr(moves, "send_move", lambda move: sent.append(move.pk))
    with django_capture_on_commit_callbacks(execute=True):
        response = run_action(operator, "tenants_tenant", "move_to_rls", tenant.pk)
    move = TenantMove.objects.get(tenant=tenant)
    assert (move.status, move.source, move.target) == ("queued", "schema", "rls")
    assert move.requested_by is not None
    assert sent == [move.pk]
    assert f"{tenant.slug} (move {move.pk})" in texts(response)[0]
    # While it is queued, the list reloads itself; a second request is refused, not queued.
    listing = operator.get(reverse("admin:control_plane_tenantmove_changelist"), HTTP_HOST=HOST)
    assert "data-live-refresh" in listing.content.decode()
    with pytest.raises(moves.MoveInProgress, match=f"move {move.pk}, queued"):
        moves.request_move(tenant, Isolation.RLS)
    assert TenantMove.objects.filter(tenant=tenant).count() == 1


def test_a_move_delivered_twice_runs_once(unique: str) -> None:
    tenant = make_tenant(f"d{unique}")
    move = moves.request_move(tenant, Isolation.RLS, send=False)
    with recovery.running(moves.MOVES, move.pk) as mine:  # w1, alive, runs the move
        assert mine
        assert moves.claim_move(move.pk, worker="w1")
        assert not moves.claim_move(move.pk, worker="w2")  # a second delivery finds it claimed
        again = moves.run_move(move.pk, worker="w2")  # and, the lease held, leaves it alone
    assert (again.status, again.worker, again.attempts) == ("copying", "w1", 0)


def test_a_move_that_fails_in_the_worker_records_why(unique: str) -> None:
    """No storage behind this tenant row: the move fails, and the record says so."""
    tenant = make_tenant(f"f{unique}")
    move = moves.request_move(tenant, Isolation.RLS, send=False)
    # An unexpected failure is recorded, then raised for the worker's log; a refusal only recorded.
    with contextlib.suppress(Exception):
        moves.run_move(move.pk)
    move.refresh_from_db()
    assert move.status == MoveStatus.FAILED
    assert move.error
    assert move.finished_at is not None


def test_a_move_its_dead_worker_left_copying_is_taken_back_and_recoverable(
    unique: str,
) -> None:
    """w1 claimed the move and died (no lease): it is an unfinished job for beat's recovery, and
    the next delivery takes it back and runs it (here it fails: no storage behind the row)."""
    tenant = make_tenant(f"s{unique}")
    move = moves.request_move(tenant, Isolation.RLS, send=False)
    assert moves.claim_move(move.pk, worker="w1")
    assert recovery.KINDS["move"] is moves.MOVES
    assert move.pk in moves.MOVES.unfinished()
    assert not recovery.is_held(moves.MOVES, move.pk)
    with contextlib.suppress(Exception):
        moves.run_move(move.pk, worker="w2")
    move.refresh_from_db()
    assert (move.status, move.worker, move.attempts) == ("failed", "w2", 1)
    assert move.pk not in moves.MOVES.unfinished()


def test_recovery_never_sends_a_node_move_to_a_worker(unique: str) -> None:
    """A node move left copying by a killed CLI is not a stranded isolation move: beat must not
    hand it to a worker (which would run it as a move to a mode named "node")."""
    tenant = make_tenant(f"n{unique}")
    node_move = TenantMove.objects.create(
        tenant=tenant, source=moves.NODE_MOVE, target=moves.NODE_MOVE, status=MoveStatus.COPYING
    )
    other = make_tenant(f"q{unique}")
    queued = TenantMove.objects.create(
        tenant=other, source=Isolation.SCHEMA, target=Isolation.RLS, status=MoveStatus.QUEUED
    )
    unfinished = set(recovery.KINDS["move"].unfinished())
    assert queued.pk in unfinished
    assert node_move.pk not in unfinished

"""Tenant lifecycle tasks (provisioning an onboarding, moving a tenant) and the worker's warm-up.

The registered names are the ones these tasks had in control_plane.tasks, before the control
plane was grouped by domain: messages already queued and every sender use them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Collection
from typing import Any

from celery import shared_task
from celery.signals import worker_process_init
from django.conf import settings
from django.db import close_old_connections

from control_plane.tenancy.models import MoveStatus, Onboarding, OnboardingStatus
from control_plane.tenancy.moves import MOVE_JOB_TASK, request_move, run_move
from control_plane.tenancy.onboarding import (
    PROVISION_TASK,
    PROVISIONING,
    REQUESTER_UNKNOWN,
    provision_onboarding,
)
from control_plane.worker import fairness, recovery
from tenants.models import Tenant
from tenants.outages import is_connection_failure
from tenants.provisioning import warm_up

ONBOARDING_QUEUE = "default"

logger = logging.getLogger(__name__)

LEGACY_MOVE_TASK = "control_plane.tasks.move_tenant"


# A PostgreSQL restart or failover: attempts a few seconds apart before the tenant is failed.
CONNECTION_RETRIES = 5
CONNECTION_RETRY_SECONDS = 2


@shared_task(name=PROVISION_TASK, bind=True, max_retries=CONNECTION_RETRIES)
def provision_tenant(
    self: Any, onboarding_id: int, requester: int | None = REQUESTER_UNKNOWN
) -> dict[str, object]:
    """Provision one onboarding request; a redelivered message makes the same tenant again.

    A lost database connection is retried, not recorded as the tenant's failure, until the
    retries are spent. Under the onboarding's lease (control_plane.worker.recovery): a second
    delivery while a live worker provisions it does nothing (it would drop that worker's schema).
    At most ONBOARDINGS_PER_REQUESTER onboardings of one requester provision at once
    (control_plane.worker.fairness): a flood from one operator leaves the other worker
    processes to everyone else's jobs on the default queue. The lease comes first, so a
    duplicate delivery never touches the slot its running twin holds. The requester comes
    with the message when its sender knew it (one query fewer before the work starts).
    """
    if requester == REQUESTER_UNKNOWN:  # a resend, or a message of an older sender
        requester = requester_of(onboarding_id)
    cap = settings.ONBOARDINGS_PER_REQUESTER if requester is not None else 0
    member = str(onboarding_id)
    if fairness.must_wait(ONBOARDING_QUEUE, requester, member, cap):  # the cheap bounce
        countdown = fairness.send_again(self)
        recovery.expect_message(PROVISIONING, onboarding_id, within=countdown)
        return {"onboarding": onboarding_id, "status": "waiting for the requester's slot"}
    with recovery.running(PROVISIONING, onboarding_id) as mine:
        if not mine:
            return {"onboarding": onboarding_id, "held elsewhere": True}
        with fairness.slot(ONBOARDING_QUEUE, requester, member, cap, _unfinished) as taken:
            if not taken:
                countdown = fairness.send_again(self)
                recovery.expect_message(PROVISIONING, onboarding_id, within=countdown)
                return {"onboarding": onboarding_id, "status": "waiting for the requester's slot"}
            will_retry = self.request.retries < CONNECTION_RETRIES
            try:
                onboarding = provision_onboarding(onboarding_id, will_retry=will_retry)
            except Exception as exc:
                if will_retry and is_connection_failure(exc):
                    close_old_connections()
                    recovery.expect_message(
                        PROVISIONING, onboarding_id, within=CONNECTION_RETRY_SECONDS
                    )
                    raise self.retry(exc=exc, countdown=CONNECTION_RETRY_SECONDS) from exc
                raise
    return {"tenant": onboarding.tenant.slug, "ms": onboarding.provisioning_ms}


def requester_of(onboarding_id: int) -> int | None:
    """Who asked for the onboarding (None: nobody recorded, so no cap)."""
    found = Onboarding.objects.filter(pk=onboarding_id).values_list("requested_by_id", flat=True)
    return found.first()


def _unfinished(members: Collection[str]) -> list[str]:
    ids = [int(m) for m in members if m.isdigit()]
    pending = Onboarding.objects.filter(pk__in=ids).exclude(
        status__in=(OnboardingStatus.SUCCEEDED, OnboardingStatus.FAILED)
    )
    return [str(pk) for pk in pending.values_list("pk", flat=True)]


@shared_task(name=MOVE_JOB_TASK, bind=True)
def run_move_task(self: Any, move_id: int) -> dict[str, object]:
    """Run one recorded move in a worker (large tenants take a while); see tenancy.moves."""
    move = run_move(move_id, worker=self.request.hostname or "")
    return {"move": move.pk, "status": move.status, "rows": move.rows}


# The name moves were sent by before they were recorded: a message still queued becomes a record.
@shared_task(name=LEGACY_MOVE_TASK)
def move_tenant_task(tenant_id: int, to: str) -> dict[str, object]:
    """Record and run a move sent by an older sender (tenant id and target only)."""
    move = request_move(Tenant.objects.get(pk=tenant_id), to, via="worker", send=False)
    move = run_move(move.pk) if move.status == MoveStatus.QUEUED else move
    return {"move": move.pk, "status": move.status, "rows": move.rows}


@worker_process_init.connect
def warm_up_provisioning(**_: object) -> None:
    """Each worker process readies provisioning as it starts, so its first onboarding does not
    pay for the clone script. In a thread: a slow or absent database must not hold up the
    process's start (Celery gives it a few seconds), and the first onboarding would do it anyway.
    """
    threading.Thread(target=_warm_up, name="provisioning-warm-up", daemon=True).start()


def _warm_up() -> None:
    started = time.perf_counter()
    try:
        warm_up()
    except Exception:
        logger.warning("provisioning warm-up failed; the first onboarding does it", exc_info=True)
        return
    elapsed = (time.perf_counter() - started) * 1000
    logger.info("provisioning warmed up in %.1f ms (pid %d)", elapsed, os.getpid())

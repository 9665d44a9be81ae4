"""Recovery of stranded jobs: every job kind's lost messages and dead workers, found by one beat task.

A job (an import, an onboarding, ...) is a row and a message. The message can be lost (Redis
restarted without persistence, a purged queue) or its worker can die (SIGKILL, a lost machine:
kombu gives the message back only after its visibility timeout, an hour). Either way the row
stays unfinished forever. Each job kind registers here how to list its unfinished jobs and how to
send one's message, and sends and runs its jobs through `send` and `running`:

- `send(kind, id)` marks "a message of this job is in the broker" (a key in the broker's own
  Redis, so a broker that loses its messages loses the marks too; it expires after
  RECOVERY_MESSAGE_GRACE_SECONDS as a bound for a message lost any other way) and sends it;
- `running(kind, id)` in the task takes the job's lease (control_plane.worker.leases), renewed
  while it runs, and consumes the mark; a second delivery while the holder lives gets False.

`recover()` (beat, every RECOVERY_INTERVAL_SECONDS) looks at every unfinished job: one with
neither a mark nor a lease for a whole lease length (a live holder retakes a lease Redis lost
within a second) is stranded, and is sent again. Re-sending is safe because every kind's task is
claim-guarded: the lease keeps two deliveries from running side by side, and the task does
nothing for a job already finished. So a lost message costs about the interval plus a lease
length, a dead worker the same; a queue backlog older than the grace only costs a duplicate
message that finds its job done or leased.

Registering a kind (a few lines, next to the kind's sender; see imports/services.py):

    IMPORTS = recovery.register("import", unfinished=lambda: ImportJob.objects.filter(
        status__in=ACTIVE_STATUSES).values_list("pk", flat=True), resend=_send_message)

then send with `recovery.send(IMPORTS, job_id)` and run the task's body inside
`with recovery.running(IMPORTS, job_id) as mine: if not mine: return`. An operator's retry is
`recovery.retry(IMPORTS, job_id)` (refused while a live worker holds the job or its message
waits); `operator_retry` answers the refusal as the kind's own problem, for the APIs.

Periodic work without rows (spare refill) needs nothing: its beat schedule sends it again. This
module never decides whether a job is finished or what it does: the kind's own code does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings

from control_plane.worker import leases

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobKind:
    """How recovery finds a kind's unfinished jobs and sends one's message (as first sent)."""

    name: str
    unfinished: Callable[[], Iterable[int]]
    resend: Callable[..., None]  # (job id, **what the first sender added)


KINDS: dict[str, JobKind] = {}


def register(
    name: str, *, unfinished: Callable[[], Iterable[int]], resend: Callable[..., None]
) -> JobKind:
    """Add a job kind to what beat recovers (idempotent: a module imported twice registers once)."""
    kind = JobKind(name=name, unfinished=unfinished, resend=resend)
    KINDS[name] = kind
    return kind


def _broker_url() -> str:
    from control_plane.celery import app

    return str(app.conf.broker_url)


def _broker() -> redis.Redis:
    """The broker's Redis: a mark lives and dies with the messages it vouches for (and so do
    the jobs' leases, which recovery reads beside the marks)."""
    return leases.client(_broker_url())


def _key(what: str, kind: JobKind, job_id: int) -> str:
    return f"recovery:{what}:{kind.name}:{job_id}"


def grace_seconds() -> float:
    return float(settings.RECOVERY_MESSAGE_GRACE_SECONDS)


def expect_message(kind: JobKind, job_id: int, *, within: float = 0.0) -> None:
    """Mark that a message of the job is (about to be) in the broker; `within`: its countdown."""
    _broker().set(_key("sent", kind, job_id), 1, px=int((grace_seconds() + within) * 1000))


def send(kind: JobKind, job_id: int, **message: Any) -> None:
    """Send the job's message, marked first, so recovery leaves it alone while it waits;
    `message`: what the kind's sender may add to it (a resend knows only the id)."""
    expect_message(kind, job_id)
    kind.resend(job_id, **message)


@contextmanager
def running(kind: JobKind, job_id: int) -> Iterator[bool]:
    """The job's lease for a task's body: False when a live worker already holds it (this
    delivery is a duplicate and must do nothing). Consumes the job's mark: its message is here."""
    # One round trip: the lease, then the mark (in this order, see _looks_stranded).
    with leases.lease(
        _key("lease", kind, job_id), url=_broker_url(), then_delete=_key("sent", kind, job_id)
    ) as mine:
        yield mine


def look_again_later(task: Any, kind: JobKind, job_id: int) -> None:
    """For a delivery that found its unfinished job's lease held. The holder may be alive (this
    is a duplicate) or just killed: a pool child's death makes the broker deliver the message
    again at once, before the dead child's lease has lapsed. Either way this message comes back
    after a lease length (marked, so the sweep leaves it be) instead of being dropped, so the
    job does not wait for beat; once the job is finished, the next look does nothing."""
    countdown = leases.lease_seconds()
    expect_message(kind, job_id, within=countdown)
    task.apply_async(args=task.request.args, kwargs=task.request.kwargs, countdown=countdown)


def is_held(kind: JobKind, job_id: int) -> bool:
    """A live worker runs the job right now."""
    return leases.is_held(_key("lease", kind, job_id), url=_broker_url())


def is_stuck(kind: JobKind, job_id: int) -> bool:
    """Neither a message of the job waits nor a live worker runs it: what `retry` accepts (ask
    only of an unfinished job; this module never decides whether a job is finished)."""
    return _looks_stranded(kind, job_id, _broker())


def _looks_stranded(kind: JobKind, job_id: int, client: redis.Redis) -> bool:
    """Neither a waiting message nor a live worker (mark first: a task takes its lease before it
    consumes the mark, so this order never misses a job starting in between)."""
    if client.exists(_key("sent", kind, job_id)):
        return False
    return not client.exists(_key("lease", kind, job_id))


def recover(kinds: Iterable[JobKind] | None = None) -> list[tuple[str, int]]:
    """Send again every job (of `kinds`, default all registered) that has looked stranded for a
    whole lease length; the (kind, id) pairs sent."""
    now = time.time()
    client = _broker()
    sent: list[tuple[str, int]] = []
    for kind in list(KINDS.values()) if kinds is None else kinds:
        for job_id in sorted(kind.unfinished()):
            suspect = _key("suspect", kind, job_id)
            if not _looks_stranded(kind, job_id, client):
                client.delete(suspect)
                continue
            since = client.get(suspect)
            if since is None:
                client.set(suspect, now, px=int(4 * leases.lease_seconds() * 1000))
                continue
            if now - float(since) < leases.lease_seconds():
                continue
            if not leases.claim_once(_key("resent", kind, job_id), url=_broker_url()):
                continue  # another beat's sweep got it
            log.warning(
                "%s %s has no message and no live worker: sending it again", kind.name, job_id
            )
            client.delete(suspect)
            send(kind, job_id)
            sent.append((kind.name, job_id))
    return sent


class NotStuck(Exception):
    """The job is not stuck: a live worker runs it, or its message waits for one. An explicit
    retry now would run it twice, or queue it twice."""


def retry(kind: JobKind, job_id: int) -> None:
    """An operator's retry of a stuck job (no message waiting, no live worker): sent again now,
    without waiting for beat's sweep to believe it stranded."""
    client = _broker()
    if client.exists(_key("lease", kind, job_id)):
        raise NotStuck(f"{kind.name} {job_id} is running on a live worker right now")
    if client.exists(_key("sent", kind, job_id)):
        raise NotStuck(f"{kind.name} {job_id} has a message waiting for a worker")
    send(kind, job_id)


def operator_retry(kind: JobKind, job_id: int, *, refused: Callable[[str], Exception]) -> None:
    """`retry` as an operator's request answers it: a job that is not stuck raises
    `refused(why)` (the kind's own 409), a broker that cannot be reached a 503."""
    from control_plane.celery import broker_unavailable, broker_unreachable_errors

    try:
        retry(kind, job_id)
    except NotStuck as exc:
        raise refused(str(exc)) from exc
    except broker_unreachable_errors() as exc:
        raise broker_unavailable() from exc

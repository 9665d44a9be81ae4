"""Recovery's decisions against the real Redis: which unfinished jobs are stranded and sent again.

A job kind of the test's own (its unfinished ids and its sends in memory) stands for imports and
onboardings: what is decided here is only marks, leases and suspicion, which live in Redis.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from control_plane.worker import leases, recovery


@pytest.fixture
def kind(unique: str, settings) -> Iterator[tuple[recovery.JobKind, set[int], list[int]]]:
    settings.LEASE_SECONDS = 0.5
    unfinished: set[int] = set()
    sent: list[int] = []
    job_kind = recovery.register(
        f"test-{unique}", unfinished=lambda: set(unfinished), resend=sent.append
    )
    yield job_kind, unfinished, sent
    recovery.KINDS.pop(job_kind.name)


def sweep_until_sent(job_kind: recovery.JobKind, sent: list[int], timeout: float = 5) -> float:
    started = time.monotonic()
    while not sent:
        recovery.recover([job_kind])
        assert time.monotonic() - started < timeout, "never sent again"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_job_with_no_message_and_no_worker_is_sent_again_after_a_lease_length(kind) -> None:
    job_kind, unfinished, sent = kind
    unfinished.add(1)
    recovery.recover([job_kind])
    assert sent == []  # suspected, not yet believed: a live holder may be retaking a lost lease
    waited = sweep_until_sent(job_kind, sent)
    assert sent == [1]
    assert waited >= leases.lease_seconds() - 0.1
    recovery.recover([job_kind])
    assert sent == [1]  # the resend marked its message: waiting, not stranded


def test_a_job_whose_message_waits_is_left_alone_until_the_grace_ends(kind, settings) -> None:
    job_kind, unfinished, sent = kind
    settings.RECOVERY_MESSAGE_GRACE_SECONDS = 1.0
    unfinished.add(2)
    recovery.send(job_kind, 2)
    assert sent == [2]
    for _ in range(10):
        recovery.recover([job_kind])
        time.sleep(0.05)
    assert sent == [2]
    sweep_until_sent_again = time.monotonic()
    while len(sent) < 2:  # the mark expired: a message lost some other way (a purge)
        recovery.recover([job_kind])
        assert time.monotonic() - sweep_until_sent_again < 5
        time.sleep(0.05)
    assert sent == [2, 2]


def test_a_job_a_live_worker_holds_is_never_sent_again_and_a_duplicate_does_nothing(kind) -> None:
    job_kind, unfinished, sent = kind
    unfinished.add(3)
    recovery.send(job_kind, 3)
    with recovery.running(job_kind, 3) as mine:
        assert mine
        with recovery.running(job_kind, 3) as duplicate:
            assert not duplicate
        for _ in range(30):  # three lease lengths, renewed all along
            recovery.recover([job_kind])
            time.sleep(0.05)
        with pytest.raises(recovery.NotStuck, match="live worker"):
            recovery.retry(job_kind, 3)
    assert sent == [3]


def test_a_dead_holders_job_is_sent_again_once_its_lease_expires(kind) -> None:
    job_kind, unfinished, sent = kind
    unfinished.add(4)
    key = "recovery:lease:" + job_kind.name + ":4"
    leases.client(recovery._broker_url()).set(key, "dead", px=500)  # a holder that stopped renewing
    recovery.recover([job_kind])
    assert sent == []
    sweep_until_sent(job_kind, sent)
    assert sent == [4]


def test_a_lease_redis_lost_is_retaken_by_its_live_holder(kind) -> None:
    job_kind, unfinished, sent = kind
    unfinished.add(5)
    key = "recovery:lease:" + job_kind.name + ":5"
    release = threading.Event()

    def hold() -> None:
        with recovery.running(job_kind, 5):
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        time.sleep(0.1)
        leases.client(recovery._broker_url()).delete(key)  # what a restart without persistence does
        for _ in range(40):
            recovery.recover([job_kind])
            time.sleep(0.05)
        assert leases.client(recovery._broker_url()).exists(key)
        assert sent == []
    finally:
        release.set()
        holder.join()


def test_an_explicit_retry_sends_a_stuck_job_at_once_and_refuses_a_waiting_one(kind) -> None:
    job_kind, unfinished, sent = kind
    unfinished.add(6)
    recovery.retry(job_kind, 6)
    assert sent == [6]
    with pytest.raises(recovery.NotStuck, match="message waiting"):
        recovery.retry(job_kind, 6)


def test_a_task_takes_its_lease_and_consumes_its_message_mark_in_one_round_trip(kind) -> None:
    """What a delivery does before its work starts is on the job's critical path: the lease and
    the mark go in one pipeline, the lease first (so a sweep never sees neither)."""
    from tests.round_trips import redis_round_trips

    job_kind, unfinished, _ = kind
    unfinished.add(7)
    recovery.send(job_kind, 7)
    assert not recovery.is_stuck(job_kind, 7)
    with redis_round_trips() as trips, recovery.running(job_kind, 7) as mine:
        taking = trips[0]  # later ones: the renewals' thread
        assert mine
        assert recovery.is_held(job_kind, 7)
    assert taking.commands == ("SET", "DEL")
    client = leases.client(recovery._broker_url())
    assert not client.exists("recovery:sent:" + job_kind.name + ":7")

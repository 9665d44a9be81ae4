"""Spare schemas: template clones ready ahead of onboarding, only ever of the current revision."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest
from psycopg import IsolationLevel

from tenants.database_roles import app_role_name, owner_connection
from tenants.models import SpareSchema
from tenants.spares import SPARES_LOCK_SPACE, drop_spares, refill_spares, take_spare
from tests.conftest import nobody_else_consumes
from tests.factories import schema_exists
from tests.round_trips import round_trips


@pytest.fixture
def targets(committed) -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    with owner_connection() as conn:
        for name in made:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


def test_a_taken_spare_becomes_the_tenant_schema(targets) -> None:
    refill_spares(2)
    spares = set(SpareSchema.objects.values_list("name", flat=True))
    assert len(spares) >= 2
    target = f"t_sp{uuid.uuid4().hex[:8]}"
    targets.append(target)
    with owner_connection() as conn:
        revisions = take_spare(conn, target)
    assert revisions is not None
    assert set(revisions) == {"django", "alembic"}
    assert schema_exists(target)
    taken = spares - set(SpareSchema.objects.values_list("name", flat=True))
    assert len(taken) == 1
    assert not schema_exists(taken.pop())
    with owner_connection() as conn:
        usage = conn.execute(
            "SELECT has_schema_privilege(%s, %s, 'USAGE')", (app_role_name(), target)
        ).fetchone()
        tables = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = %s", (target,)
        ).fetchone()
    assert usage == (True,)
    assert tables is not None
    assert tables[0] >= 7


def test_spares_of_an_old_template_revision_are_never_handed_out(targets) -> None:
    refill_spares(1)
    with owner_connection() as conn:
        conn.execute(
            "INSERT INTO template.django_migrations (app, name, applied) VALUES ('spares', 'test', now())"
        )
    try:
        target = f"t_sp{uuid.uuid4().hex[:8]}"
        with owner_connection() as conn:
            assert take_spare(conn, target) is None
        stale = list(SpareSchema.objects.values_list("name", flat=True))
        made = refill_spares(1)
        assert made == 1
        assert all(not schema_exists(name) for name in stale)
        targets.append(target)
        with owner_connection() as conn:
            assert take_spare(conn, target) is not None
    finally:
        with owner_connection() as conn:
            conn.execute("DELETE FROM template.django_migrations WHERE app = 'spares'")
        drop_spares()


def test_two_onboardings_never_take_the_same_spare(targets) -> None:
    drop_spares()
    refill_spares(1)
    names = [f"t_sp{uuid.uuid4().hex[:8]}" for _ in range(2)]
    targets.extend(names)
    results: list[object] = []
    barrier = threading.Barrier(2)

    def take(name: str) -> None:
        with owner_connection() as conn:
            barrier.wait()
            results.append(take_spare(conn, name))

    threads = [threading.Thread(target=take, args=(n,)) for n in names]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r is None for r in results) == [False, True]


def test_taking_a_spare_is_one_round_trip_on_an_autocommit_connection(targets) -> None:
    drop_spares()
    refill_spares(1)
    taken, missed = (f"t_sp{uuid.uuid4().hex[:8]}" for _ in range(2))
    targets.extend([taken, missed])
    with owner_connection(autocommit=True) as conn:
        with round_trips(conn) as first:
            revisions = take_spare(conn, taken)
        with round_trips(conn) as second:
            none_left = take_spare(conn, missed)
    assert len(first) == 1, first
    assert revisions is not None
    assert set(revisions) == {"django", "alembic"}
    assert schema_exists(taken)
    assert len(second) == 1, second
    assert none_left is None
    assert not schema_exists(missed)


def test_concurrent_refills_make_exactly_the_spares_wanted(targets) -> None:
    barrier = threading.Barrier(4)
    made: list[int] = []

    def refill() -> None:
        barrier.wait()
        made.append(refill_spares(3))

    threads = [threading.Thread(target=refill) for _ in range(4)]
    # Only these four refill: a worker an earlier test left running takes no refill message an
    # earlier onboarding queued (its count would be counted here too).
    with nobody_else_consumes("default"):
        drop_spares()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    with owner_connection() as conn:
        schemas = conn.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname LIKE 't\\_\\_spare\\_%%'"
        ).fetchone()
    try:
        assert sorted(made) == [0, 0, 0, 3]
        assert SpareSchema.objects.count() == 3
        assert schemas == (3,)
    finally:
        drop_spares()


def refills_waiting_for_the_lock() -> int:
    with owner_connection(autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = %s"
            " AND objid = 0 AND objsubid = 2 AND NOT granted",
            (SPARES_LOCK_SPACE,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def test_a_refill_queued_behind_another_counts_its_spares_on_a_repeatable_read_connection(
    targets, monkeypatch
) -> None:
    """The refill counts after it has the lock, so it must see what the lock's last holder
    committed, whatever isolation level its connection came with (a pooled one that an earlier
    user left at REPEATABLE READ, a server default): at REPEATABLE READ the lock statement
    took the snapshot before the wait, and the second of two queued refills cloned again."""
    from tenants import spares

    @contextmanager
    def repeatable_read(**kwargs: bool) -> Iterator[psycopg.Connection]:
        with owner_connection(**kwargs) as conn:
            conn.isolation_level = IsolationLevel.REPEATABLE_READ
            yield conn

    made: list[int] = []
    threads = [threading.Thread(target=lambda: made.append(refill_spares(3))) for _ in range(2)]
    with nobody_else_consumes("default"):
        drop_spares()
        monkeypatch.setattr(spares, "owner_connection", repeatable_read)
        try:
            # Both refills queue behind this holder, each with its statement for the lock sent
            # (their snapshot taken) before the first of them commits.
            with owner_connection() as holder, holder.transaction():
                holder.execute("SELECT pg_advisory_xact_lock(%s, 0)", (SPARES_LOCK_SPACE,))
                for thread in threads:
                    thread.start()
                deadline = time.monotonic() + 20
                while refills_waiting_for_the_lock() < 2:
                    assert time.monotonic() < deadline, "the refills did not wait for the lock"
                    time.sleep(0.01)
            for thread in threads:
                thread.join()
        finally:
            monkeypatch.undo()
    try:
        assert sorted(made) == [0, 3]
        assert SpareSchema.objects.count() == 3
    finally:
        drop_spares()


def test_one_refill_message_waits_at_a_time_and_a_started_refill_lets_the_next_be_asked(
    monkeypatch,
) -> None:
    """A burst of onboardings sends one refill, not one each: the ones after the first find it
    queued. Once it starts (and counts), a spare taken later asks for another."""
    from tenants import spares

    monkeypatch.setattr(spares, "REFILL_QUEUED_KEY", f"spares:refill-queued:{uuid.uuid4().hex}")
    try:
        assert spares.refill_wanted()
        assert not spares.refill_wanted()
        assert not spares.refill_wanted()
        spares.refill_starting()
        assert spares.refill_wanted()
    finally:
        spares.refill_starting()

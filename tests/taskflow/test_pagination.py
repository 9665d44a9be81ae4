"""Keyset pagination: composite sorts, NULLs, signed cursors, and no skipped or repeated rows
while rows come and go between page requests (a hypothesis property)."""

from __future__ import annotations

import os
import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.orm import Session

from taskflow import due
from taskflow.errors import InvalidCursor, InvalidInput
from taskflow.filters import TaskFilters
from taskflow.models import Project, Task
from taskflow.openapi import sort_pattern
from taskflow.pagination import _page_statement, parse_sort
from taskflow.selectors import TASK_SORTS, ListQuery, task_list
from tenants.binding import binding_for, engine
from tenants.placement import PLACEHOLDER_SCHEMA
from tests.taskflow.conftest import TenantFixture

# The default run tries a few dozen cases; HYPOTHESIS_EXAMPLES=2000 for a long run.
EXAMPLES = int(os.environ.get("HYPOTHESIS_EXAMPLES", "30"))
SORT_FIELDS = ["created_at", "updated_at", "due_at", "priority", "title"]
BASE = datetime(2026, 1, 1, tzinfo=UTC)


@contextmanager
def rolled_back_session(fixture: TenantFixture) -> Iterator[Session]:
    """A session bound like a request's, inside a transaction that is always rolled back."""
    tenant = fixture.tenant
    schema = binding_for(tenant).schema
    with engine().connect() as raw:
        conn = raw.execution_options(schema_translate_map={PLACEHOLDER_SCHEMA: schema})
        transaction = conn.begin()
        conn.execute(sa.text("SELECT set_config('app.tenant_id', :t, true)"), {"t": str(tenant.pk)})
        session = Session(bind=conn, join_transaction_mode="create_savepoint")
        try:
            yield session
        finally:
            session.close()
            transaction.rollback()


DUE_DAYS = [None, None, date(2030, 1, 1), date(2030, 1, 2), date(2031, 6, 1)]


def _due(rng: random.Random) -> dict[str, Any]:
    """A due date as the release reading `due_date` writes it, or, after the switch, a time."""
    day = rng.choice(DUE_DAYS)
    if due.served() == due.DUE_DATE:
        return {"due_date": day}
    if day is None:
        return {"due_at": None}
    return {"due_at": due.start_of(day) + timedelta(hours=rng.choice([0, 0, 9, 23]))}


def add_tasks(
    session: Session, tenant_id: int, project_id: int, rng: random.Random, count: int
) -> list[int]:
    tasks = [
        Task(
            tenant_id=tenant_id,
            project_id=project_id,
            title=rng.choice(["alpha", "beta", "gamma", "Beta", "delta"]),
            priority=rng.randint(0, 4),
            **_due(rng),
            created_at=BASE + timedelta(minutes=rng.randint(0, 5)),
            updated_at=BASE + timedelta(minutes=rng.randint(0, 5)),
        )
        for _ in range(count)
    ]
    session.add_all(tasks)
    session.flush()
    return [t.id for t in tasks]


def walk(
    session: Session,
    tenant_id: int,
    sort: str,
    limit: int,
    between_pages=None,
    *,
    backwards_from=None,
):
    """Follow next (or previous) cursors to the end; returns the ids in the order seen."""
    seen: list[int] = []
    cursor = backwards_from
    for _ in range(1000):
        page = task_list(
            session=session, tenant_id=tenant_id, filters=TaskFilters(),
            query=ListQuery(sort=sort, cursor=cursor, limit=limit),
        )  # fmt: skip
        ids = [t.id for t in page.items]
        seen = ids + seen if backwards_from else seen + ids
        cursor = page.previous_cursor if backwards_from else page.next_cursor
        if cursor is None:
            return seen
        if between_pages:
            between_pages()
    raise AssertionError("pagination did not end")


sorts = st.lists(st.sampled_from(SORT_FIELDS), min_size=1, max_size=3, unique=True).flatmap(
    lambda fields: st.tuples(*[st.sampled_from([f, f"-{f}"]) for f in fields]).map(",".join)
)


@settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    max_examples=EXAMPLES,
)
@given(
    sort=sorts,
    limit=st.integers(1, 7),
    initial=st.integers(0, 30),
    seed=st.integers(0, 2**32 - 1),
    churn=st.booleans(),
)
def test_rows_present_throughout_are_seen_exactly_once_in_order(
    fresh_tenant: TenantFixture,
    due_read: str,
    sort: str,
    limit: int,
    initial: int,
    seed: int,
    churn: bool,
) -> None:
    rng = random.Random(seed)
    tenant_id = fresh_tenant.tenant.pk
    with rolled_back_session(fresh_tenant) as session:
        project = Project(tenant_id=tenant_id, key="P", name="P")
        session.add(project)
        session.flush()
        ids = add_tasks(session, tenant_id, project.id, rng, initial)
        deleted: set[int] = set()

        def mutate() -> None:
            if not churn:
                return
            ids.extend(add_tasks(session, tenant_id, project.id, rng, rng.randint(0, 3)))
            live = [i for i in ids if i not in deleted]
            for victim in rng.sample(live, k=min(len(live), rng.randint(0, 2))):
                session.execute(
                    sa.update(Task).where(Task.id == victim).values(deleted_at=sa.func.now())
                )
                deleted.add(victim)

        initial_ids = set(ids)
        forward = walk(session, tenant_id, sort, limit, mutate)
        assert len(forward) == len(set(forward)), "a row was repeated"
        throughout = initial_ids - deleted
        assert throughout <= set(forward), f"skipped {throughout - set(forward)}"

        # With nothing changing, the walk equals the full ordered list, forwards and backwards.
        everything = walk(session, tenant_id, sort, 200)
        assert walk(session, tenant_id, sort, limit) == everything
        expected = sorted_ids(session, tenant_id, sort)
        assert everything == expected
        if everything:
            last_page = task_list(
                session=session, tenant_id=tenant_id, filters=TaskFilters(),
                query=ListQuery(sort=sort, limit=limit),
            )  # fmt: skip
            cursor = last_page.next_cursor
            while cursor is not None:
                page = task_list(
                    session=session, tenant_id=tenant_id, filters=TaskFilters(),
                    query=ListQuery(sort=sort, cursor=cursor, limit=limit),
                )  # fmt: skip
                if page.next_cursor is None:
                    tail = page
                    break
                cursor = page.next_cursor
            else:
                tail = last_page
            back = []
            if tail.previous_cursor is not None:
                back = walk(session, tenant_id, sort, limit, backwards_from=tail.previous_cursor)
            assert back + [t.id for t in tail.items] == everything


def sorted_ids(session: Session, tenant_id: int, sort: str) -> list[int]:
    """The expected order: one plain ORDER BY over every live row, no keyset involved."""
    return list(session.scalars(order_query(tenant_id, sort)))


def order_query(tenant_id: int, sort: str) -> sa.Select:
    from taskflow.models import DUE_AT_SORT, DUE_DATE_SORT

    exprs = {"due_at": DUE_AT_SORT if due.served() == due.DUE_AT else DUE_DATE_SORT}
    order = []
    for key in sort.split(","):
        field = key.lstrip("-")
        expr = exprs.get(field, getattr(Task, field))
        order.append(expr.desc() if key.startswith("-") else expr.asc())
    last_desc = sort.split(",")[-1].startswith("-")
    order.append(Task.id.desc() if last_desc else Task.id.asc())
    return (
        sa.select(Task.id)
        .where(Task.tenant_id == tenant_id, Task.deleted_at.is_(None))
        .order_by(*order)
    )


# --- Cursors are signed and scoped ---------------------------------------------------------------


def seeded_page(session: Session, fixture: TenantFixture, sort: str):
    tenant_id = fixture.tenant.pk
    project = Project(tenant_id=tenant_id, key="Q", name="Q")
    session.add(project)
    session.flush()
    add_tasks(session, tenant_id, project.id, random.Random(1), 10)
    return task_list(
        session=session,
        tenant_id=tenant_id,
        filters=TaskFilters(),
        query=ListQuery(limit=3, sort=sort),
    )


def test_tampered_cursor_is_refused(fresh_tenant: TenantFixture) -> None:
    with rolled_back_session(fresh_tenant) as session:
        page = seeded_page(session, fresh_tenant, sort="priority")
        payload, signature = page.next_cursor.split(".")
        flipped = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1]
        for bad in (f"{flipped}.{signature}", "garbage", f"{payload}.AAAA", ""):
            with pytest.raises(InvalidCursor):
                task_list(
                    session=session, tenant_id=fresh_tenant.tenant.pk, filters=TaskFilters(),
                    query=ListQuery(sort="priority", cursor=bad or "x", limit=3),
                )  # fmt: skip


@pytest.mark.parametrize(
    ("sort", "filters", "tenant_offset", "message"),
    [
        ("-priority", TaskFilters(), 0, "another sort"),
        ("priority", TaskFilters(status=("done",)), 0, "other filters"),
        ("priority", TaskFilters(), 1, "another tenant"),
    ],
)
def test_cursor_is_refused_under_another_sort_filter_or_tenant(
    fresh_tenant: TenantFixture, sort, filters, tenant_offset, message
) -> None:
    with rolled_back_session(fresh_tenant) as session:
        page = seeded_page(session, fresh_tenant, sort="priority")
        with pytest.raises(InvalidCursor, match=message):
            task_list(
                session=session, tenant_id=fresh_tenant.tenant.pk + tenant_offset, filters=filters,
                query=ListQuery(sort=sort, cursor=page.next_cursor, limit=3),
            )  # fmt: skip


def test_cursor_errors_are_400_problems_over_http(tenant_a: TenantFixture) -> None:
    api = tenant_a.api()
    response = api.get("/api/v1/tasks", cursor="bm90LWEtY3Vyc29y.AAAA")
    assert response.status_code == 400
    assert response["Content-Type"] == "application/problem+json"
    assert response.json()["title"] == "Invalid cursor"


def test_api_pages_nulls_and_links(fresh_tenant: TenantFixture, due_read: str) -> None:
    api = fresh_tenant.api()
    project = api.post("/api/v1/projects", {"key": "N", "name": "N"}).json()
    days = ["2030-01-01", None, "2029-05-05", None, "2030-01-01", None, "2031-01-01"]
    for i, d in enumerate(days):
        api.post("/api/v1/tasks", {"project_id": project["id"], "title": f"t{i}", "due_at": d})
    pages, url = [], "/api/v1/tasks?sort=due_at&limit=2"
    while url:
        body = api.client.get(url).json()
        pages.append(body)
        url = body["next"]
    seen = [(t["due_at"] or "")[:10] or None for page in pages for t in page["results"]]
    assert seen == ["2029-05-05", "2030-01-01", "2030-01-01", "2031-01-01", None, None, None]
    assert pages[0]["previous"] is None
    assert pages[-1]["next"] is None
    assert "limit=2" in pages[1]["next"]
    assert "sort=due_at" in pages[1]["next"]
    back = api.client.get(pages[-1]["previous"]).json()
    assert back["results"] == pages[-2]["results"]
    descending = api.get("/api/v1/tasks", sort="-due_at", limit=10).json()["results"]
    assert [t["due_at"] for t in descending][:3] == [None, None, None]


@pytest.mark.parametrize(
    "sort",
    [
        "due_at", "-due_at", "priority", "-created_at", "title", "updated_at",
        "-priority,due_at", "priority,-due_at",
    ],
)  # fmt: skip
def test_an_index_serves_each_sort_on_first_and_later_pages(
    fresh_tenant: TenantFixture, due_read: str, sort: str
) -> None:
    """The selector's own SQL, captured as executed, reads the table only by ordered index scans
    that a LIMIT stops early: no Sort over the table, whatever the page's depth. (A mixed-direction
    sort merges a few such scans and sorts only the rows they return.) After a cursor, the keyset
    comparison is where the index range starts (an Index Cond), as the application's role under
    row-level security: as a Filter, a deep page would read every earlier row of the tenant."""
    with rolled_back_session(fresh_tenant) as session:
        tenant_id = fresh_tenant.tenant.pk
        first = seeded_page(session, fresh_tenant, sort=sort)
        session.execute(sa.text("SET LOCAL enable_seqscan = off"))
        session.execute(sa.text("SET LOCAL enable_sort = off"))
        # An Incremental Sort over another index's prefix is a sort too (a plan of equal cost
        # when the statistics say the tenant has a row or two, as in the shared schema here).
        session.execute(sa.text("SET LOCAL enable_incremental_sort = off"))
        captured: list[tuple[str, Any]] = []
        connection = session.connection()

        def capture(conn, cursor, statement, parameters, context, executemany) -> None:
            if "tasks" in statement and not statement.startswith("EXPLAIN"):
                captured.append((statement, parameters))

        sa.event.listen(connection, "before_cursor_execute", capture)
        try:
            for cursor in (None, first.next_cursor):
                task_list(
                    session=session, tenant_id=tenant_id, filters=TaskFilters(),
                    query=ListQuery(sort=sort, cursor=cursor, limit=3),
                )  # fmt: skip
        finally:
            sa.event.remove(connection, "before_cursor_execute", capture)
        assert len(captured) >= 2  # a mixed-direction page may read a second branch
        for statement, parameters in captured:
            plan = "\n".join(
                r[0] for r in connection.exec_driver_sql(f"EXPLAIN {statement}", parameters)
            )
            assert table_reads_stop_early(plan), plan
            assert keyset_starts_the_range(plan), plan


def keyset_starts_the_range(plan: str) -> bool:
    """No read of tasks in `plan` filters rows by a keyset row comparison after the scan: each
    is part of the scan's Index Cond. (Under row-level security PostgreSQL moves only leakproof
    conditions ahead of the policy; a coalesce() in the sort key is not one, a CASE is.)"""
    lines = [line.strip(" ->") for line in plan.splitlines()]
    return not any(line.startswith("Filter:") and "ROW(" in line for line in lines)


def table_reads_stop_early(plan: str) -> bool:
    """Every read of tasks in `plan` is an index scan under a Limit (through Result nodes: RLS's
    one-time tenant filter)."""
    nodes = [
        (len(line) - len(line.lstrip(" -")), line.strip(" ->"))
        for line in plan.splitlines()
        if "(cost=" in line
    ]
    scans = [i for i, (_, node) in enumerate(nodes) if " on tasks" in node]
    for i in scans:
        depth, node = nodes[i]
        if not node.startswith(("Index Scan", "Index Only Scan")):
            return False
        ancestors = [(d, n) for d, n in nodes[:i] if d < depth]
        parent = next(n for d, n in reversed(ancestors) if not n.startswith("Result") and d < depth)
        if not parent.startswith("Limit"):
            return False
    return bool(scans)


def test_limit_defaults_to_50_and_caps_at_200(fresh_tenant: TenantFixture) -> None:
    with rolled_back_session(fresh_tenant) as session:
        tenant_id = fresh_tenant.tenant.pk
        project = Project(tenant_id=tenant_id, key="L", name="L")
        session.add(project)
        session.flush()
        add_tasks(session, tenant_id, project.id, random.Random(2), 60)
        page = task_list(
            session=session, tenant_id=tenant_id, filters=TaskFilters(), query=ListQuery()
        )
        assert len(page.items) == 50


def test_a_pages_sql_is_built_once_per_shape(fresh_tenant: TenantFixture) -> None:
    """Later pages of a shape already seen (same filters present, sort, direction) reuse the
    statement: only parameter values change, not the SQL."""
    with rolled_back_session(fresh_tenant) as session:
        tenant_id = fresh_tenant.tenant.pk
        first = seeded_page(session, fresh_tenant, sort="-priority,title")
        after = ListQuery(sort="-priority,title", cursor=first.next_cursor, limit=3)
        task_list(session=session, tenant_id=tenant_id, filters=TaskFilters(), query=after)
        built = _page_statement.cache_info().misses
        second = task_list(session=session, tenant_id=tenant_id, filters=TaskFilters(), query=after)
        third = task_list(
            session=session, tenant_id=tenant_id, filters=TaskFilters(),
            query=ListQuery(sort="-priority,title", cursor=second.next_cursor, limit=3),
        )  # fmt: skip
        assert _page_statement.cache_info().misses == built
        assert third.items
        assert {r.id for r in third.items}.isdisjoint(r.id for r in second.items)
        # Another value of a filter is the same shape.
        task_list(
            session=session, tenant_id=tenant_id, filters=TaskFilters(q="x_y"),
            query=ListQuery(sort="-priority,title"),
        )  # fmt: skip
        shaped = _page_statement.cache_info().misses
        task_list(
            session=session, tenant_id=tenant_id, filters=TaskFilters(q="other"),
            query=ListQuery(sort="-priority,title"),
        )  # fmt: skip
        assert _page_statement.cache_info().misses == shaped


@pytest.mark.parametrize(
    "value",
    [
        "", "title", "-priority,due_date", "title,-id", "-id", "id", "created_at,updated_at,id",
        "id,title", "title,-title", "title,title", "title,,id", " title", "title ", ",title",
        "id,id", "x", "--title", "title,id,-id",
    ],
)  # fmt: skip
def test_the_sort_grammar_is_the_one_described(value: str) -> None:
    """parse_sort accepts exactly what the sort parameter's pattern describes."""
    described = re.compile(sort_pattern(TASK_SORTS)).search(value) is not None
    try:
        parse_sort(value, TASK_SORTS, "created_at")
    except InvalidInput:
        accepted = False
    else:
        accepted = True
    assert accepted == described


def test_a_cursor_and_a_fingerprint_are_the_bytes_they_were() -> None:
    """Cursors a client holds stay valid: the payload is json.dumps's compact text and the
    signature HMAC-SHA256 of it cut to 16 bytes, however they are computed."""
    import base64
    import hashlib
    import hmac
    import json

    from taskflow.pagination import (
        Cursor,
        CursorScope,
        _cursor_key,
        decode_cursor,
        encode_cursor,
        filters_fingerprint,
    )

    scope = CursorScope(7, "-priority,title,id", filters_fingerprint({"q": "é"}), "tasks")
    values = (3, "Prüfung — 完了", "2026-12-08T00:00:00+00:00", 42)
    token = encode_cursor(Cursor(values, True), scope)
    payload = json.dumps(
        {"v": list(values), "b": True, "t": 7, "s": scope.sort, "f": scope.filters, "r": "tasks"},
        separators=(",", ":"),
    ).encode()
    signature = hmac.new(_cursor_key(), payload, hashlib.sha256).digest()[:16]
    encoded = [
        base64.urlsafe_b64encode(part).rstrip(b"=").decode() for part in (payload, signature)
    ]
    assert token == ".".join(encoded)
    assert decode_cursor(token, scope) == Cursor(values, True)
    canonical = json.dumps({"q": "é", "when": date(2026, 1, 2)}, default=str)
    expected = hashlib.sha256(canonical.encode()).hexdigest()[:16]
    assert filters_fingerprint({"when": date(2026, 1, 2), "q": "é", "none": None}) == expected

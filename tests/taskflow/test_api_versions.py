"""Dated API versions: negotiation, pinning, transformation at the edge, deprecation, changelog.

The machinery is proven with a test-only catalog: an older version `2026-10-01` in which a task's
`description` was called `details`, deprecated and with a sunset date.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from email.utils import parsedate_to_datetime

import pytest

from taskflow import api_versions
from taskflow.api_versions import ApiVersion, Catalog, Change, renamed_field
from tenants.models import Tenant
from tests.taskflow.conftest import TenantFixture
from tests.taskflow.test_api import assert_problem, make_project, make_task

OLD = "2026-10-01"


def catalog_with_an_older_version() -> Catalog:
    newest = api_versions.CATALOG.latest
    older = ApiVersion(
        name=OLD,
        summary="A version only the tests know.",
        deprecated_on=date(2026, 11, 15),
        sunset_on=date(2027, 6, 1),
    )
    renamed = renamed_field(
        "task", "details", "description", "Tasks: `details` is now `description`."
    )
    return Catalog(versions=(older, replace(newest, changes=(renamed,))))


@pytest.fixture
def test_catalog(monkeypatch: pytest.MonkeyPatch) -> Catalog:
    catalog = catalog_with_an_older_version()
    monkeypatch.setattr(api_versions, "CATALOG", catalog)
    return catalog


def pin(fixture: TenantFixture, version: str) -> None:
    from tenants.resolution import forget_tenant

    Tenant.objects.filter(pk=fixture.tenant.pk).update(api_version=version)
    forget_tenant(fixture.tenant)


# --- The catalog ---------------------------------------------------------------------------------


def test_a_catalog_refuses_unordered_duplicate_or_undated_versions() -> None:
    a, b = ApiVersion("2026-01-01", "a"), ApiVersion("2026-02-01", "b")
    with pytest.raises(ValueError, match="oldest first"):
        Catalog(versions=(b, a))
    with pytest.raises(ValueError, match="oldest first"):
        Catalog(versions=(a, a))
    with pytest.raises(ValueError, match="nothing to change"):
        Catalog(versions=(replace(a, changes=(renamed_field("task", "x", "y", "x"),)), b))
    with pytest.raises(ValueError, match="isoformat"):
        ApiVersion("latest", "not a date")


def test_a_pin_between_or_before_declared_versions_gets_the_next_one_served() -> None:
    catalog = catalog_with_an_older_version()
    newest = catalog.latest.name
    assert catalog.pinned(OLD).name == OLD
    assert catalog.pinned("2026-10-15").name == newest  # an unknown day moves up, never down
    assert catalog.pinned("2025-01-01").name == OLD  # past its sunset: the oldest still served
    assert catalog.pinned("").name == newest
    assert catalog.changes_after(catalog.latest) == ()
    assert [c.description for c in catalog.changes_after(catalog.versions[0])] == [
        "Tasks: `details` is now `description`."
    ]


def test_the_changelog_is_generated_from_the_declarations() -> None:
    text = catalog_with_an_older_version().changelog()
    newest = api_versions.CATALOG.latest.name
    assert text.index(f'<a id="v{newest}">') < text.index(f'<a id="v{OLD}">')  # newest first
    assert "- Tasks: `details` is now `description`." in text
    assert f"{OLD} — deprecated since 2026-11-15, removed on 2027-06-01" in text


def test_a_renamed_field_renames_sort_keys_and_filters_both_ways() -> None:
    change = renamed_field("task", "due", "due_date", "renamed")
    assert change.upgrade_query is not None
    assert change.downgrade_query is not None
    query = {"sort": ["-priority,-due,id"], "due": ["2030-01-01"], "limit": ["5"]}
    upgraded = change.upgrade_query(query)
    assert upgraded == {
        "sort": ["-priority,-due_date,id"],
        "due_date": ["2030-01-01"],
        "limit": ["5"],
    }
    assert change.downgrade_query(upgraded) == query


def test_an_item_is_downgraded_through_its_resources_changes_newest_first() -> None:
    """A page applies one downgrader to each item, chosen once for its version and resource."""
    first = renamed_field("task", "a", "b", "a became b")
    second = renamed_field("task", "b", "c", "b became c")
    other = renamed_field("project", "x", "y", "projects only")
    changes = (first, other, second)  # oldest first, as the catalog lists them
    downgrade = api_versions.item_downgrader(changes, "task")
    assert downgrade is not None
    assert downgrade({"c": 1, "x": 2}) == {"a": 1, "x": 2}
    assert api_versions.downgrade_item(changes, "task", {"c": 1}) == {"a": 1}
    assert api_versions.item_downgrader(changes, "comment") is None
    assert api_versions.item_downgrader((other,), "project") is other.downgrade_item


def test_a_row_is_built_in_an_older_versions_shape_as_its_downgraded_item() -> None:
    """A page's rows are built once in an old version's shape (a declared rename): the same keys,
    order and values as the newest item downgraded."""
    from datetime import UTC, datetime

    from taskflow.representations import TASK_FIELDS

    changes = api_versions.CATALOG.changes_after(api_versions.CATALOG.pinned(DUE_DATE_VERSION))
    due = datetime(2030, 1, 31, 23, 30, tzinfo=UTC)
    row = tuple(due if name == "due_at" else f"v-{name}" for name in TASK_FIELDS)
    shape = api_versions.row_shape(changes, "task", TASK_FIELDS)
    assert shape is not None
    built = shape.item(row)
    downgraded = api_versions.downgrade_item(
        changes, "task", dict(zip(TASK_FIELDS, row, strict=True))
    )
    assert list(built.items()) == list(downgraded.items())
    assert built["due_date"] == due.date()
    assert "due_at" not in built

    chain = (
        renamed_field("task", "a", "b", "a became b"),
        renamed_field("project", "x", "y", "projects only"),
        renamed_field("task", "b", "c", "b became c"),
    )
    shape = api_versions.row_shape(chain, "task", ("id", "c", "x"))
    assert shape is not None
    assert shape.names == ("id", "a", "x")
    assert api_versions.row_shape((), "task", ("id", "c")) == api_versions.RowShape(("id", "c"))


def test_a_page_of_rows_is_built_as_each_row_alone_and_a_row_of_another_width_is_refused() -> None:
    from datetime import UTC, datetime

    from taskflow.representations import TASK_FIELDS

    changes = api_versions.CATALOG.changes_after(api_versions.CATALOG.pinned(DUE_DATE_VERSION))
    shape = api_versions.row_shape(changes, "task", TASK_FIELDS)
    assert shape is not None
    rows = [
        tuple(
            datetime(2030, 1, day, tzinfo=UTC) if name == "due_at" else day for name in TASK_FIELDS
        )
        for day in (1, 2, 3)
    ]
    assert shape.items(rows) == [shape.item(row) for row in rows]
    assert [item["due_date"].day for item in shape.items(rows)] == [1, 2, 3]
    assert shape.items([]) == []
    with pytest.raises(ValueError, match="columns"):
        shape.items([rows[0][:-1]])
    with pytest.raises(ValueError, match="columns"):
        shape.item((*rows[0], "one more"))


def test_a_change_that_downgrades_items_otherwise_leaves_rows_to_the_edge() -> None:
    custom = Change(
        description="custom",
        resources=frozenset({"task"}),
        downgrade_item=lambda item: {**item, "extra": 1},
    )
    assert api_versions.row_shape((custom,), "task", ("id", "title")) is None
    assert api_versions.row_shape((custom,), "project", ("id",)) is not None
    renamed = renamed_field("task", "a", "b", "a became b")
    assert replace(renamed, description="edited").downgrade_item is not None  # derived again
    with pytest.raises(ValueError, match="not both"):
        Change(
            description="both",
            resources=frozenset({"task"}),
            downgrade_item=lambda item: item,
            renamed_fields=(api_versions.FieldRename(new="b", old="a"),),
        )


# --- Through the API -----------------------------------------------------------------------------


def test_every_api_response_names_the_version_it_was_served_at(tenant_a: TenantFixture) -> None:
    api = tenant_a.api("member")
    newest = api_versions.CATALOG.latest.name
    assert api.get("/api/v1/projects")["TaskFlow-Version"] == newest
    missing = api.get("/api/v1/projects/999999999")
    assert missing.status_code == 404
    assert missing["TaskFlow-Version"] == newest
    assert "Deprecation" not in missing


def test_an_unknown_version_is_a_400_problem_listing_the_known_ones(
    tenant_a: TenantFixture,
) -> None:
    response = tenant_a.client("member").get(
        "/api/v1/projects", headers={"TaskFlow-Version": "1999-01-01"}
    )
    body = assert_problem(response, 400)
    assert body["known_versions"] == list(api_versions.CATALOG.names)
    assert "1999-01-01" in body["detail"]


def test_a_client_at_an_older_version_reads_and_writes_the_old_shape(
    tenant_a: TenantFixture, test_catalog: Catalog
) -> None:
    api = tenant_a.api("member")
    old = {"TaskFlow-Version": OLD}
    project = make_project(api)
    created = api.post(
        "/api/v1/tasks",
        {"project_id": project["id"], "title": "Old", "details": "from 2026-10"},
        **old,
    )
    assert created.status_code == 201, created.content
    task = created.json()
    assert task["details"] == "from 2026-10"
    assert "description" not in task
    assert created["TaskFlow-Version"] == OLD

    # The newest shape of the same row, as a current client reads it.
    current = api.get(f"/api/v1/tasks/{task['id']}").json()
    assert current["description"] == "from 2026-10"
    assert "details" not in current

    patched = api.patch(
        f"/api/v1/tasks/{task['id']}", {"details": "edited"}, **old, **{"If-Match": '"1"'}
    )
    assert patched.status_code == 200, patched.content
    assert patched.json()["details"] == "edited"

    # A stale write: the 412's current representation is in the old shape too.
    stale = api.patch(f"/api/v1/tasks/{task['id']}", {"details": "x"}, **old, **{"If-Match": '"1"'})
    body = assert_problem(stale, 412)
    assert body["current"]["details"] == "edited"
    assert "description" not in body["current"]


def test_a_page_at_an_older_version_has_old_items_and_links_in_old_names(
    tenant_a: TenantFixture, test_catalog: Catalog
) -> None:
    api = tenant_a.api("member")
    project = make_project(api)
    for n in range(3):
        make_task(api, project["id"], title=f"T{n}", description=f"d{n}")
    response = tenant_a.client("member").get(
        "/api/v1/tasks",
        {"project": project["id"], "limit": 2, "sort": "created_at"},
        headers={"TaskFlow-Version": OLD},
    )
    assert response.status_code == 200, response.content
    page = response.json()
    assert [item["details"] for item in page["results"]] == ["d0", "d1"]
    assert list(page["results"][0])[:6] == [
        "id", "project_id", "external_id", "title", "details", "status"
    ]  # fmt: skip
    assert all("description" not in item for item in page["results"])
    assert page["next"] is not None


def test_a_tenant_pinned_to_a_deprecated_version_gets_deprecation_sunset_and_link(
    tenant_a: TenantFixture, test_catalog: Catalog
) -> None:
    pin(tenant_a, OLD)
    try:
        response = tenant_a.api("member").get("/api/v1/projects")
        assert response.status_code == 200
        assert response["TaskFlow-Version"] == OLD
        assert response["Deprecation"] == "@1794700800"  # 2026-11-15T00:00:00Z
        assert parsedate_to_datetime(response["Sunset"]).date() == date(2027, 6, 1)
        assert f'/api/v1/changelog#v{OLD}>; rel="deprecation"' in response["Link"]
        # The header still wins over the pin.
        newest = api_versions.CATALOG.latest.name
        asked = tenant_a.client("member").get(
            "/api/v1/projects", headers={"TaskFlow-Version": newest}
        )
        assert asked["TaskFlow-Version"] == newest
        assert "Deprecation" not in asked
    finally:
        pin(tenant_a, api_versions.CATALOG.latest.name)


def test_the_changelog_is_served_without_a_token(tenant_a: TenantFixture) -> None:
    from django.test import Client

    response = Client(HTTP_HOST=tenant_a.host).get("/api/v1/changelog")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/markdown")
    assert f'<a id="v{api_versions.CATALOG.latest.name}">' in response.content.decode()


def test_a_pin_moved_by_an_operator_reaches_the_next_request(
    tenant_a: TenantFixture, test_catalog: Catalog
) -> None:
    from control_plane.tenancy.lifecycle import pin_api_version

    api = tenant_a.api("member")
    newest = api_versions.CATALOG.latest.name
    assert api.get("/api/v1/projects")["TaskFlow-Version"] == newest  # resolution cached now
    try:
        pin_api_version(tenant_a.tenant, OLD)
        assert api.get("/api/v1/projects")["TaskFlow-Version"] == OLD
    finally:
        pin_api_version(tenant_a.tenant, newest)


# --- 2026-12-01: refusals by a rule are 422 ---------------------------------------------------


def test_a_project_id_of_no_live_project_is_422_now_and_400_at_2026_11_01(
    tenant_a: TenantFixture,
) -> None:
    """The first real version: older clients keep the status they were written against, and
    the problem's own `status` member says the same as the response."""
    api = tenant_a.api("member")
    body = {"project_id": 999999999, "title": "x"}
    now = api.post("/api/v1/tasks", body)
    assert now.status_code == 422, now.content
    assert now.json()["status"] == 422
    assert now["TaskFlow-Version"] == api_versions.CATALOG.latest.name
    before = api.post("/api/v1/tasks", body, **{"TaskFlow-Version": "2026-11-01"})
    assert before.status_code == 400, before.content
    assert before["Content-Type"] == "application/problem+json"
    assert before.json()["status"] == 400
    assert before.json()["errors"][0]["field"] == "project_id"
    assert before["TaskFlow-Version"] == "2026-11-01"
    pin(tenant_a, "2026-11-01")
    try:
        pinned = api.post("/api/v1/tasks", body)
        assert pinned.status_code == 400
        assert pinned["TaskFlow-Version"] == "2026-11-01"
    finally:
        pin(tenant_a, "")


def test_other_statuses_are_the_same_at_2026_11_01(tenant_a: TenantFixture) -> None:
    client = tenant_a.client("member")
    old = {"TaskFlow-Version": "2026-11-01"}
    assert client.get("/api/v1/tasks/999999999", headers=old).status_code == 404
    api = tenant_a.api("member")
    assert api.post("/api/v1/tasks", {"title": "x"}, **old).status_code == 400


# --- 2026-12-06: due_at; older versions refused in their own names -------------------------------

DUE_DATE_VERSION = "2026-12-01"  # the newest version whose tasks have `due_date`


def test_an_old_clients_page_is_built_in_its_shape_not_downgraded_after(
    tenant_a: TenantFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page of tasks at 2026-12-01 has `due_date` (the UTC day) in `due_at`'s place, each item
    built once in that shape: the edge's item downgrader is never asked."""
    from taskflow import versioning

    api = tenant_a.api("member")
    project = make_project(api)
    make_task(api, project["id"], title="late", due_at="2030-01-31T23:30:00-05:00")
    newest = api.get("/api/v1/tasks", project=project["id"]).json()["results"]

    def refused(*_: object) -> None:
        raise AssertionError("a page of rows was downgraded after it was built")

    monkeypatch.setattr(versioning.api_versions, "item_downgrader", refused)
    response = tenant_a.client("member").get(
        "/api/v1/tasks", {"project": project["id"]}, headers={"TaskFlow-Version": DUE_DATE_VERSION}
    )
    assert response.status_code == 200, response.content
    [item] = response.json()["results"]
    assert item["due_date"] == "2030-02-01"
    assert list(item) == ["due_date" if key == "due_at" else key for key in newest[0]]


def test_an_old_client_refused_for_its_due_date_gets_a_problem_naming_due_date(
    tenant_a: TenantFixture,
) -> None:
    """The edge renames an old client's `due_date` to `due_at` before the view checks it; the
    refusal names `due_date` again, in its errors and its detail, and never `due_at`, a field
    that client does not know."""
    api = tenant_a.api("member")
    old = {"TaskFlow-Version": DUE_DATE_VERSION}
    project = make_project(api)
    created = api.post(
        "/api/v1/tasks",
        {"project_id": project["id"], "title": "x", "due_date": "31/01/2030"},
        **old,
    )
    body = assert_problem(created, 400)
    assert [e["field"] for e in body["errors"]] == ["due_date"]
    assert "due_date" in body["detail"]
    assert "due_at" not in created.content.decode()

    task = make_task(api, project["id"])
    patched = api.patch(
        f"/api/v1/tasks/{task['id']}", {"due_date": "tomorrow", "version": task["version"]}, **old
    )
    body = assert_problem(patched, 400)
    assert [e["field"] for e in body["errors"]] == ["due_date"]
    assert "due_date" in body["detail"]
    assert "due_at" not in patched.content.decode()

    # The newest version is refused in its own name, as before.
    newest = api.post(
        "/api/v1/tasks", {"project_id": project["id"], "title": "x", "due_at": "31/01/2030"}
    )
    assert [e["field"] for e in assert_problem(newest, 400)["errors"]] == ["due_at"]


def test_an_old_client_refused_a_sort_is_offered_due_date_and_its_own_parameters_kept(
    tenant_a: TenantFixture,
) -> None:
    client = tenant_a.client("member")
    old = {"TaskFlow-Version": DUE_DATE_VERSION}
    sort = assert_problem(client.get("/api/v1/tasks", {"sort": "due"}, headers=old), 400)
    assert sort["errors"][0]["field"] == "sort"
    assert "due_date" in sort["errors"][0]["message"]
    assert "due_at" not in sort["errors"][0]["message"]
    assert "sort" in sort["detail"]
    # A parameter the client sent itself is named as it sent it, even `due_at`.
    unknown = assert_problem(client.get("/api/v1/tasks", {"due_at": "x"}, headers=old), 400)
    assert [e["field"] for e in unknown["errors"]] == ["due_at"]

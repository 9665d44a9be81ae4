"""The beat task that purges rows soft-deleted past the retention."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from taskflow.models import Task, TaskHistory
from taskflow.upkeep import purge_soft_deleted
from tenants.binding import binding_for, tenant_session
from tests.taskflow.conftest import TenantFixture, new_key


def age_deletion(fixture: TenantFixture, task_id: int, days: int) -> None:
    with tenant_session(binding_for(fixture.tenant)) as session:
        session.execute(
            sa.update(Task)
            .where(Task.id == task_id)
            .values(deleted_at=sa.func.now() - sa.text(f"interval '{days} days'"))
        )


@pytest.mark.worker
def test_purge_removes_only_rows_deleted_before_the_retention(
    fresh_tenant: TenantFixture, celery_worker_process
) -> None:
    api = fresh_tenant.api()
    project = api.post("/api/v1/projects", {"key": new_key(), "name": "P"}).json()
    old, recent, live = (
        api.post("/api/v1/tasks", {"project_id": project["id"], "title": t}).json() for t in "abc"
    )
    for task in (old, recent):
        api.delete(f"/api/v1/tasks/{task['id']}", {"version": 1})
    age_deletion(fresh_tenant, old["id"], 40)
    age_deletion(fresh_tenant, recent["id"], 5)

    result = purge_soft_deleted.delay(30).get(timeout=30)  # through a real worker

    assert result[fresh_tenant.tenant.slug]["tasks"] == 1
    listed = {t["id"] for t in api.get("/api/v1/tasks", include_deleted="true").json()["results"]}
    assert listed == {recent["id"], live["id"]}
    assert api.get(f"/api/v1/tasks/{old['id']}/history").status_code == 404  # the row is gone
    with tenant_session(binding_for(fresh_tenant.tenant)) as session:
        operations = session.scalars(
            sa.select(TaskHistory.operation)
            .where(TaskHistory.row_id == old["id"])
            .order_by(TaskHistory.id)
        ).all()
    assert operations == ["insert", "soft_delete", "update", "delete"]


def test_beat_schedules_the_purge_under_the_name_a_worker_registers() -> None:
    from control_plane.celery import app

    assert any(
        entry["task"] == "taskflow.tasks.purge_soft_deleted"
        for entry in app.conf.beat_schedule.values()
    )
    app.loader.import_default_modules()  # what a worker does at start: autodiscovery
    assert "taskflow.tasks.purge_soft_deleted" in app.tasks

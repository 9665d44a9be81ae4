"""Operator API routes of the fan-out, mounted under /ops/v1/ on the public host."""

from django.urls import URLPattern, path

from control_plane.fanout import api

urlpatterns: list[URLPattern] = [
    path("migration-runs", api.MigrationRunCollection.as_view(), name="ops-migration-runs"),
    path("migration-runs/<id:run_id>", api.MigrationRunDetail.as_view(), name="ops-migration-run"),
    path(
        "migration-runs/<id:run_id>/resume",
        api.ResumeMigrationRun.as_view(),
        name="ops-migration-run-resume",
    ),
    path(
        "migration-runs/<id:run_id>/cancel",
        api.CancelMigrationRun.as_view(),
        name="ops-migration-run-cancel",
    ),
    path(
        "migration-runs/<id:run_id>/tenants/<slug:slug>/retry",
        api.RetryTenantMigration.as_view(),
        name="ops-migration-run-retry-tenant",
    ),
]

"""Tenant API routes of bulk imports, mounted under /api/v1/ on tenant hosts.

`tasks/export` cannot collide with TaskFlow's `tasks/<id:task_id>`: it is not an integer.
"""

from django.urls import path

from control_plane.imports import api

urlpatterns = [
    path("imports", api.ImportCollection.as_view(), name="imports"),
    path("imports/<id:job_id>", api.ImportDetail.as_view(), name="import"),
    path("imports/<id:job_id>/errors", api.ImportErrors.as_view(), name="import-errors"),
    path("imports/<id:job_id>/cancel", api.ImportCancel.as_view(), name="import-cancel"),
    path("imports/<id:job_id>/retry", api.ImportRetry.as_view(), name="import-retry"),
    path("tasks/export", api.TaskExport.as_view(), name="tasks-export"),
]

"""TaskFlow's API routes, mounted under /api/v1/ on tenant hosts."""

from django.urls import path
from drf_spectacular.views import SpectacularSwaggerView

from taskflow import openapi, versioning, views
from tenants.openapi_view import DescriptionView

urlpatterns = [
    path(
        "schema",
        DescriptionView.as_view(
            authentication_classes=[],
            permission_classes=[],
            custom_settings=openapi.SCHEMA_SETTINGS,
        ),
        name="schema",
    ),
    path(
        "docs",
        SpectacularSwaggerView.as_view(
            url_name="schema", authentication_classes=[], permission_classes=[]
        ),
        name="docs",
    ),
    path("changelog", versioning.changelog, name="changelog"),
    path("projects", views.ProjectCollection.as_view(), name="projects"),
    path("projects/<id:project_id>", views.ProjectDetail.as_view(), name="project"),
    path(
        "projects/<id:project_id>/restore", views.ProjectRestore.as_view(), name="project-restore"
    ),
    path("tasks", views.TaskCollection.as_view(), name="tasks"),
    path("tasks/<id:task_id>", views.TaskDetail.as_view(), name="task"),
    path("tasks/<id:task_id>/restore", views.TaskRestore.as_view(), name="task-restore"),
    path("tasks/<id:task_id>/history", views.TaskHistoryList.as_view(), name="task-history"),
    path("tasks/<id:task_id>/comments", views.TaskComments.as_view(), name="task-comments"),
]

"""A tenant host's URLs as production has them, plus the benchmark's two comparison views."""

from django.urls import path

from control_plane.urls_tenant import handler404, handler500
from control_plane.urls_tenant import urlpatterns as tenant_urlpatterns
from tests.benchmarks.taskflow_api.views import DrfTaskList, OffsetTaskList

urlpatterns = [
    *tenant_urlpatterns,
    path("bench/offset-tasks", OffsetTaskList.as_view(), name="bench-offset-tasks"),
    path("bench/drf-tasks", DrfTaskList.as_view(), name="bench-drf-tasks"),
]

__all__ = ["handler404", "handler500", "urlpatterns"]

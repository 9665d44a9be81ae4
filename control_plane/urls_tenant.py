"""URLs of a tenant host: the TaskFlow API."""

from django.urls import include, path

from control_plane.http.views import api_root, tenant_home
from control_plane.identity.api import Me

urlpatterns = [
    path("", tenant_home, name="tenant-home"),
    path("api/v1/", api_root, name="api-root"),
    path("api/v1/me", Me.as_view(), name="me"),
    path("api/v1/", include("taskflow.urls")),
    path("api/v1/", include("control_plane.imports.urls")),
]

handler404 = "control_plane.http.views.not_found"
handler500 = "control_plane.http.views.server_error"

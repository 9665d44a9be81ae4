"""URLs of the public host: the control plane (admin, operator API)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path(
        "ops/v1/schema",
        SpectacularAPIView.as_view(urlconf="control_plane.urls_public"),
        name="ops-schema",
    ),
    path("ops/v1/", include("control_plane.tenancy.urls")),
    path("ops/v1/", include("control_plane.fanout.urls")),
]

handler404 = "control_plane.http.views.not_found"
handler500 = "control_plane.http.views.server_error"

"""URLs of the public host: the control plane (admin, operator API)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView

from control_plane import ops_api

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path(
        "ops/v1/schema",
        SpectacularAPIView.as_view(urlconf="control_plane.urls_public"),
        name="ops-schema",
    ),
    path("ops/v1/tenants", ops_api.TenantCollection.as_view(), name="ops-tenants"),
    path("ops/v1/tenants/<slug:slug>", ops_api.TenantDetail.as_view(), name="ops-tenant"),
    path(
        "ops/v1/tenants/<slug:slug>/suspend",
        ops_api.SuspendTenant.as_view(),
        name="ops-tenant-suspend",
    ),
    path(
        "ops/v1/tenants/<slug:slug>/activate",
        ops_api.ActivateTenant.as_view(),
        name="ops-tenant-activate",
    ),
    path(
        "ops/v1/tenants/<slug:slug>/archive",
        ops_api.ArchiveTenant.as_view(),
        name="ops-tenant-archive",
    ),
    path(
        "ops/v1/tenants/<slug:slug>/retry", ops_api.RetryTenant.as_view(), name="ops-tenant-retry"
    ),
    path("ops/v1/", include("control_plane.fanout.urls")),
]

handler404 = "control_plane.views.not_found"
handler500 = "control_plane.views.server_error"

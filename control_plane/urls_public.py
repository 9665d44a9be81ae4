"""URLs of the public host: the control plane (admin, operator API)."""

from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework.authentication import SessionAuthentication

from control_plane.http.contract import DOCUMENTS
from control_plane.identity.authentication import BearerTokenAuthentication
from control_plane.identity.permissions import IsStaff
from tenants.openapi_view import DescriptionView

# The operator API's description is for staff: a staff token, or a staff user signed in to the
# admin (so Swagger UI can load it in the browser).
STAFF_ONLY: dict[str, object] = {
    "authentication_classes": [BearerTokenAuthentication, SessionAuthentication],
    "permission_classes": [IsStaff],
}
OPS = next(document for document in DOCUMENTS if document.name == "ops")

urlpatterns = [
    path("", RedirectView.as_view(url="/admin/", permanent=False)),
    path("admin/", admin.site.urls),
    path(
        "ops/v1/schema",
        DescriptionView.as_view(
            urlconf=OPS.urlconf, custom_settings=dict(OPS.settings), **STAFF_ONLY
        ),
        name="ops-schema",
    ),
    path(
        "ops/v1/docs",
        SpectacularSwaggerView.as_view(url_name="ops-schema", **STAFF_ONLY),
        name="ops-docs",
    ),
    path("ops/v1/", include("control_plane.tenancy.urls")),
    path("ops/v1/", include("control_plane.fanout.urls")),
    path("ops/v1/", include("control_plane.evolution.urls")),
]

handler404 = "control_plane.http.views.not_found"
handler500 = "control_plane.http.views.server_error"

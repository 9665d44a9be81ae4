"""Operator API routes of tenants and their moves, mounted under /ops/v1/ on the public host."""

from django.urls import URLPattern, path

from control_plane.tenancy import api, move_api

urlpatterns: list[URLPattern] = [
    path("tenants", api.TenantCollection.as_view(), name="ops-tenants"),
    path("tenants/<slug:slug>", api.TenantDetail.as_view(), name="ops-tenant"),
    path("tenants/<slug:slug>/suspend", api.SuspendTenant.as_view(), name="ops-tenant-suspend"),
    path("tenants/<slug:slug>/activate", api.ActivateTenant.as_view(), name="ops-tenant-activate"),
    path("tenants/<slug:slug>/archive", api.ArchiveTenant.as_view(), name="ops-tenant-archive"),
    path("tenants/<slug:slug>/retry", api.RetryTenant.as_view(), name="ops-tenant-retry"),
    path("moves", move_api.MoveCollection.as_view(), name="ops-moves"),
    path("moves/<id:move_id>", move_api.MoveDetail.as_view(), name="ops-move"),
    path("moves/<id:move_id>/retry", move_api.RetryMove.as_view(), name="ops-move-retry"),
]

"""Operator API routes of tenants, mounted under /ops/v1/ on the public host."""

from django.urls import URLPattern, path

from control_plane.tenancy import api

urlpatterns: list[URLPattern] = [
    path("tenants", api.TenantCollection.as_view(), name="ops-tenants"),
    path("tenants/<slug:slug>", api.TenantDetail.as_view(), name="ops-tenant"),
    path("tenants/<slug:slug>/suspend", api.SuspendTenant.as_view(), name="ops-tenant-suspend"),
    path("tenants/<slug:slug>/activate", api.ActivateTenant.as_view(), name="ops-tenant-activate"),
    path("tenants/<slug:slug>/archive", api.ArchiveTenant.as_view(), name="ops-tenant-archive"),
    path("tenants/<slug:slug>/retry", api.RetryTenant.as_view(), name="ops-tenant-retry"),
]

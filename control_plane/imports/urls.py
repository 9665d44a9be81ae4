"""Tenant API routes of bulk imports, mounted under /api/v1/ on tenant hosts."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []

"""Operator API routes of the fan-out, mounted under /ops/v1/ on the public host."""

from django.urls import URLPattern

urlpatterns: list[URLPattern] = []

"""The Django project and the public schema: settings, URLs, Celery app, admin, operator API."""

from control_plane.celery import app as celery_app

__all__ = ("celery_app",)

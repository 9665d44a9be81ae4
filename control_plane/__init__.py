"""The Django project and the public schema: settings, URLConfs, Celery app, WSGI/ASGI.

Each domain is a package: identity, tenancy, fanout, imports, http, worker.
"""

from control_plane.celery import app as celery_app

__all__ = ("celery_app",)

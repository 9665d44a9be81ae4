"""The WSGI application gunicorn serves.

Both URLconfs (and with them every view, serializer and SQLAlchemy model) are imported here, not
on a worker's first request, and then everything loaded so far is frozen out of the garbage
collector: those ~150,000 objects live as long as the process, and a full collection that walked
them took about 100 ms of a request here, several times a minute under load.
"""

import gc
import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application
from django.urls import get_resolver

from control_plane.observability.tracing import start_tracing

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "control_plane.settings")
# Before the handler loads its middleware: the Django instrumentation adds one (when tracing is on).
start_tracing("web")
application = get_wsgi_application()
for urlconf in (settings.ROOT_URLCONF, settings.PUBLIC_SCHEMA_URLCONF):
    get_resolver(urlconf).url_patterns  # noqa: B018 - imports the URLconf and its views
gc.freeze()

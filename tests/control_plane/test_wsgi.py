"""The WSGI module loads the whole application and freezes it out of the garbage collector."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = """
import gc, sys
import control_plane.wsgi
print(gc.get_freeze_count(), "taskflow.views" in sys.modules, "control_plane.tenancy.api" in sys.modules)
"""


def test_wsgi_imports_both_urlconfs_and_freezes_what_it_loaded() -> None:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE],
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "control_plane.settings"},
        capture_output=True,
        text=True,
        check=True,
    )
    frozen, tenant_views, public_views = completed.stdout.split()
    assert tenant_views == "True"
    assert public_views == "True"
    # Django, DRF, SQLAlchemy and the project's modules: far more than an empty interpreter.
    assert int(frozen) > 50_000

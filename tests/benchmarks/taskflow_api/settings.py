"""Settings of the TaskFlow API benchmark's server: the platform's settings, plus two
benchmark-only routes (see tests.benchmarks.taskflow_api.urls) and the app holding the unmanaged
model of the DRF baseline. Everything production serves is unchanged, on the same paths.
"""

from __future__ import annotations

from control_plane.settings import *  # noqa: F403
from control_plane.settings import SHARED_APPS, TENANT_APPS

BENCH_APP = "tests.benchmarks.taskflow_api"

TENANT_APPS = [*TENANT_APPS, BENCH_APP]
INSTALLED_APPS = SHARED_APPS + [app for app in TENANT_APPS if app not in SHARED_APPS]
ROOT_URLCONF = "tests.benchmarks.taskflow_api.urls"

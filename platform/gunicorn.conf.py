"""gunicorn's hooks for the platform's metrics (`gunicorn -c platform/gunicorn.conf.py ...`).

Prometheus' multiprocess mode needs one folder per server, named before any worker imports
prometheus_client: the master makes (or empties) it when it starts, and forgets a worker's live
gauges when the worker exits. A file, not a module of control_plane: importing that package
here would import prometheus_client in the master before the folder is set.

The worker is gunicorn's gthread worker, whose own error pages (a request line over
`limit_request_line`, too many or too large header fields, an unparsable request) are
application/problem+json like every other API error (control_plane.http.gunicorn_worker).
"""

import os
import shutil
import tempfile
from typing import Any

worker_class = "control_plane.http.gunicorn_worker.ProblemThreadWorker"


def on_starting(server: Any) -> None:
    folder = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if not folder:
        folder = tempfile.mkdtemp(prefix="taskflow-web-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    else:  # an earlier run's files would add to this one's (and pids get reused)
        shutil.rmtree(folder, ignore_errors=True)
        os.makedirs(folder, exist_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)

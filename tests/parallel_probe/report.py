"""What an xdist worker of the probe run sees: its database, its Redis, and whether the other
worker's mark reached it (tests/test_parallel.py reads the reports)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import redis
from django.conf import settings
from django.db import connection

from control_plane.imports.conf import upload_dir
from tenants.models import Tenant


def report() -> None:
    worker = os.environ["PYTEST_XDIST_WORKER"]
    folder = Path(os.environ["PARALLEL_PROBE_DIR"])
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.set("parallel-probe", worker)
    (folder / f"{worker}.ready").touch()
    deadline = time.monotonic() + 60  # both workers have marked their Redis before either reads
    while len(list(folder.glob("*.ready"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_database()")
        (database,) = cursor.fetchone()
    report = {
        "database": database,
        "redis_url": settings.REDIS_URL,
        "broker_url": settings.CELERY_BROKER_URL,
        "redis_mark": (client.get("parallel-probe") or b"").decode(),
        "platform_tenants": Tenant.objects.filter(schema_name="public").count(),
        "upload_dir": str(upload_dir()),
    }
    (folder / f"{worker}.json").write_text(json.dumps(report))

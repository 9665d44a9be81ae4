"""CPU time and statements of one POST /ops/v1/tenants, in process, for bench_onboarding_e2e.

Run by path with another tree's code on PYTHONPATH (`--baseline-tree`), so it imports nothing
from `tests`: a tree older than a helper's move (tests/processes.py, say) has none of this
tree's test modules, and only Django and the tree's own application code are measured.
Prints one JSON line: the median CPU ms and statements per POST.

The broker send is left out (Celery's `send_task` does nothing here), the same way for every
tree: no worker is asked to provision, and a tree that names its enqueue step differently is
measured alike. CPU time, not wall time: far less sensitive to a loaded machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

PUBLIC_HOST = "localhost"


def no_send(*_args: Any, **_kwargs: Any) -> None:
    """Celery's send_task for this process: the POST alone is measured, not the publish."""
    return None


def measure(count: int, staff_token: str, prefix: str) -> dict[str, float]:
    import django

    django.setup()
    from celery import Celery
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    Celery.send_task = no_send  # type: ignore[method-assign, assignment]
    client = Client(HTTP_HOST=PUBLIC_HOST, HTTP_AUTHORIZATION=f"Bearer {staff_token}")

    def post(i: int) -> int:
        slug = f"{prefix}{i:05d}"
        body = {"name": slug, "slug": slug, "domain": f"{slug}.localhost",
                "isolation": "schema", "owner_email": f"o-{slug}@example.com"}  # fmt: skip
        return client.post("/ops/v1/tenants", body, content_type="application/json").status_code

    for i in range(5):  # warm: imports, the principal cache, statement caches
        post(i)
    cpu, statements = [], []
    for i in range(5, 5 + count):
        with CaptureQueriesContext(connection) as queries:
            started = time.process_time()
            status = post(i)
            cpu.append((time.process_time() - started) * 1000)
        if status != 202:
            raise SystemExit(f"POST answered {status}")
        statements.append(len(queries))
    return {"cpu_ms": statistics.median(cpu), "statements": statistics.median(statements)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--token", required=True)
    parser.add_argument("--prefix", required=True)
    args = parser.parse_args()
    print(json.dumps(measure(args.count, args.token, args.prefix)))


if __name__ == "__main__":
    main()

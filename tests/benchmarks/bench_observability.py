"""What observability costs: a list request's CPU with metrics, JSON logging and rate limiting on vs
all of them off, in the same run.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with superuser `postgres`, Redis at
127.0.0.1:6379, `wrk` on PATH: `apt-get install wrk`); about 4 minutes:

    .venv/bin/python -m tests.benchmarks.bench_observability [--tasks 100000] [--workers 2]
        [--threads 4] [--connections 8] [--duration 15] [--rounds 3] [--keep] [--reuse]
        [--instructions [--instruction-requests 40] [--baseline-tree DIR]]

What it does:

1. Creates the throw-away database `taskflow_bench_obs` (BENCH_DB_NAME) with `setup_platform`,
   one schema-mode tenant with a member's token and --tasks tasks, as bench_taskflow_api does
   (its helpers); Redis BENCH_REDIS_URL (default db 4).
2. Starts two gunicorn servers side by side (tests.processes.GunicornServer), each with
   platform/gunicorn.conf.py (the metrics folder of production), --workers x --threads, DEBUG
   off, stderr (the log lines) to a file: `on`: METRICS_ENABLED, LOG_FORMAT=json with the access
   line, RATE_LIMITS_ENABLED with quotas no run reaches (RATE_LIMIT_PLANS: every request is
   checked and charged, none refused: served requests are what is measured), METRICS_TOKEN set,
   and a Prometheus-like scrape of /metrics once per round; `off`: METRICS_ENABLED=false,
   ACCESS_LOG=false, LOG_LEVEL=WARNING, RATE_LIMITS_ENABLED=false. A round in which any
   response was not a 200 stops the benchmark: it would be measuring something else.
3. Rounds alternate on, off, on, off... (after a warm-up of each): wrk with --connections
   keep-alive clients, GET /api/v1/tasks?limit=50 for --duration seconds. The CPU each server's
   worker processes used (user + system, /proc) over the round is divided by the requests it
   answered: CPU per request, which other load on the machine does not change the way it
   changes latency.
4. In this process (django.setup() on the same database, the same settings, a metrics folder
   of its own, the access log to a file): --blocks blocks of --block-requests GET requests
   through Django's test client per mode (on, off, limits alone: as the platform charges them in
   tenant resolution's round trip, in a round trip of their own, and through DRF's throttle
   alone; metrics and the access log alone), modes alternating block by block, each block's
   process CPU time divided by its requests. Other processes' load changes this figure less
   than the servers' (no scheduling between processes, no client), so it is the steadier one
   on a busy machine; the test client's own work is in both modes. Every response must be 200.
5. In this process, what a refusal (429) costs, blocks alternating as in 4, on a tenant whose
   quota (1 per hour, keys of this run) is spent: `early + memo` (the platform:
   control_plane.ratelimits.early, a refused client refused again from the refusal memo),
   `early, no memo` (the memo emptied before each request: every refusal asks Redis), and
   `throttle` (MIDDLEWARE without the early layer: authentication, DRF and its throttle, as
   before the early layer). Every response must be 429.
6. With --instructions (needs valgrind): instructions per request in process, on and off, each
   counted by callgrind in a process of its own (tests.benchmarks.observability_instructions),
   for this checkout and, with --baseline-tree DIR, another: a figure other work on the machine
   does not move, for the on/off ratio and a before/after one.
7. Prints the table: per mode the requests, req/s, p50/p99, CPU per request (median of rounds),
   and on/off; then the in-process figures, each with the load average around it.
   Target: on/off <= 1.05.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("BENCH_DB_NAME", "taskflow_bench_obs")
# This process's own metrics folder (step 4), before anything imports prometheus_client.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-obs-inproc-"))
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")

import argparse
import json
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.bench_onboarding import create_database, drop_database
from tests.benchmarks.bench_taskflow_api import (
    BENCH_DB,
    HOST,
    PY,
    ROOT,
    Http,
    bench_env,
    load_tasks,
    make_bench_tenant,
)
from tests.benchmarks.observability_instructions import instructions
from tests.benchmarks.observability_instructions import report as report_instructions
from tests.benchmarks.quotas import UNREACHABLE_PLANS
from tests.processes import GunicornServer, cpu_by_pid

PATH = "/api/v1/tasks?limit=50"
METRICS_TOKEN = "bench-metrics-" + secrets.token_urlsafe(16)
TARGET_RATIO = 1.05

MODES = {
    "on": {
        "RATE_LIMIT_PLANS": json.dumps(UNREACHABLE_PLANS),
        "METRICS_ENABLED": "true",
        "METRICS_TOKEN": METRICS_TOKEN,
        "LOG_FORMAT": "json",
        "ACCESS_LOG": "true",
        "LOG_LEVEL": "INFO",
        "RATE_LIMITS_ENABLED": "true",
    },
    "off": {
        "METRICS_ENABLED": "false",
        "METRICS_TOKEN": "",
        "LOG_FORMAT": "json",
        "ACCESS_LOG": "false",
        "LOG_LEVEL": "WARNING",
        "RATE_LIMITS_ENABLED": "false",
    },
}


class Server(GunicornServer):
    """gunicorn with the platform's hooks, in one mode; its log lines go to a file."""

    def __init__(self, mode: str, env: dict[str, str], workers: int, threads: int) -> None:
        self.mode = mode
        self.metrics_dir = tempfile.mkdtemp(prefix=f"bench-obs-{mode}-metrics-")
        super().__init__(
            {**env, **MODES[mode], "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir},
            workers=workers, threads=threads, host=HOST, worker_class="gthread",
            config="platform/gunicorn.conf.py", extra=(), prefix=f"bench-obs-{mode}-",
        )  # fmt: skip

    def scrape(self) -> int:
        """GET /metrics as Prometheus would; the exposition's size."""
        conn = Http(self.port, "localhost", "")
        conn.headers["Authorization"] = f"Bearer {METRICS_TOKEN}"
        status, body, _ = conn.get("/metrics")
        return len(body) if status == 200 else 0

    def stop(self, timeout: float = 30) -> None:
        super().stop(timeout)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


@dataclass
class Round:
    mode: str
    requests: int
    seconds: float
    cpu: float
    p50_ms: float
    p99_ms: float
    errors: int

    @property
    def cpu_us(self) -> float:
        return self.cpu / self.requests * 1e6


def wrk(server: Server, token: str, connections: int, seconds: float) -> dict[str, float]:
    completed = subprocess.run(
        ["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{round(seconds)}s",
         "--timeout", "10s", "--latency", "-H", f"Host: {HOST}", "-H", f"Authorization: Bearer {token}",
         f"http://127.0.0.1:{server.port}{PATH}"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    out = completed.stdout
    total = re.search(r"(\d+) requests in ([\d.]+)s", out)
    if total is None:
        raise SystemExit(f"wrk printed no summary:\n{out}\n{completed.stderr}")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "requests": float(total.group(1)),
        "seconds": float(total.group(2)),
        "p50": _ms(re.search(r"50%\s+([\d.]+)(us|ms|s)", out)),
        "p99": _ms(re.search(r"99%\s+([\d.]+)(us|ms|s)", out)),
        "errors": float(errors.group(1)) if errors else 0.0,
    }


def _ms(match: re.Match[str] | None) -> float:
    if match is None:
        return float("nan")
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def measured(server: Server, token: str, connections: int, seconds: float) -> Round:
    pids = server.worker_pids()
    before = cpu_by_pid(pids)
    if server.mode == "on":
        server.scrape()
    stats = wrk(server, token, connections, seconds)
    cpu = sum(now - before.get(pid, 0.0) for pid, now in cpu_by_pid(pids).items())
    if stats["errors"]:
        raise SystemExit(
            f"{server.mode}: {stats['errors']:.0f} of {stats['requests']:.0f} responses were "
            "not 200 (refused?): the round would not measure served requests"
        )
    return Round(
        server.mode,
        int(stats["requests"]),
        stats["seconds"],
        cpu,
        stats["p50"],
        stats["p99"],
        int(stats["errors"]),
    )


def without_early_layer() -> list[str]:
    """MIDDLEWARE without control_plane.ratelimits.early: the limits as the DRF throttle alone
    checked them before it (after authentication)."""
    from django.conf import settings

    early = "control_plane.ratelimits.early.EarlyRateLimitMiddleware"
    return [m for m in settings.MIDDLEWARE if m != early]


# The limits charged in a round trip of their own, after tenant resolution's (as before
# control_plane.ratelimits.prepaid charged them in resolution's).
OWN_ROUND_TRIP = {"TENANT_RESOLUTION_READER": ""}


def throttle_only() -> dict[str, Any]:
    """The limits as DRF's throttle alone checked them (no early layer, no prepaid charge)."""
    return {"MIDDLEWARE": without_early_layer(), **OWN_ROUND_TRIP}


@dataclass
class Variant:
    """One way of serving a request in this process: its settings, and what runs before each
    request (outside the measured time it is not: it is part of the variant's cost)."""

    settings: dict[str, Any]
    before_each: Callable[[], None] | None = None


def alternating_blocks(
    token: str, variants: dict[str, Variant], status: int, blocks: int, per_block: int
) -> dict[str, list[float]]:
    """CPU seconds per request in this process, by variant, one figure per block; the variants
    take turns block by block (order reversed every other block). Every response must have
    `status`."""
    from django.test import Client, override_settings

    headers = {"Authorization": f"Bearer {token}"}
    clients: dict[str, Client] = {}
    figures: dict[str, list[float]] = {name: [] for name in variants}

    def run(name: str, count: int) -> None:
        client, before = clients[name], variants[name].before_each
        for _ in range(count):
            if before is not None:
                before()
            answered = client.get(PATH).status_code
            if answered != status:
                raise SystemExit(f"in process, {name}: {answered}, not {status}")

    for name, variant in variants.items():  # each handler loads its middleware under its settings
        with override_settings(**variant.settings):
            clients[name] = Client(HTTP_HOST=HOST, headers=headers)
            if status != 200:  # spend the quota, and warm the principal cache
                clients[name].get(PATH)
            run(name, 50)
    names = list(variants)
    for block in range(blocks):
        for name in names if block % 2 == 0 else reversed(names):
            with override_settings(**variants[name].settings):
                started = time.process_time()
                run(name, per_block)
                figures[name].append((time.process_time() - started) / per_block)
    return figures


def in_process(token: str, blocks: int, per_block: int) -> dict[str, list[float]]:
    """CPU seconds per served request in this process, limits (never reached), metrics and the
    access log on vs off, and each part alone."""
    limits = {
        "RATE_LIMITS_ENABLED": True,
        "RATE_LIMIT_PLANS": UNREACHABLE_PLANS,
        "RATE_LIMIT_KEY_PREFIX": f"rl-bench-obs-{secrets.token_hex(4)}",
    }
    observed = {"METRICS_ENABLED": True, "ACCESS_LOG": True}
    off = {"METRICS_ENABLED": False, "ACCESS_LOG": False, "RATE_LIMITS_ENABLED": False}
    variants = {
        "on": Variant({**observed, **limits}),
        "off": Variant(off),
        "limits only": Variant({**off, **limits}),
        "limits only, own round trip": Variant({**off, **limits, **OWN_ROUND_TRIP}),
        "limits only, throttle": Variant({**off, **limits, **throttle_only()}),
        "metrics + log only": Variant({**off, **observed}),
    }
    return alternating_blocks(token, variants, 200, blocks, per_block)


def refusals(token: str, blocks: int, per_block: int) -> dict[str, list[float]]:
    """CPU seconds per 429 in this process: the early layer with its memo, without it, and the
    DRF throttle alone (MIDDLEWARE without the early layer)."""
    from control_plane.ratelimits.memo import REFUSALS

    spent = {
        "METRICS_ENABLED": True,
        "ACCESS_LOG": True,
        "RATE_LIMITS_ENABLED": True,
        "RATE_LIMIT_PLANS": {
            plan: dict.fromkeys(("reads", "writes", "imports", "exports"), 1)
            for plan in ("free", "standard", "enterprise")
        },
        "RATE_LIMIT_WINDOW_SECONDS": 3600,
        "RATE_LIMIT_KEY_PREFIX": f"rl-bench-obs-429-{secrets.token_hex(4)}",
    }
    variants = {
        "early + memo": Variant(spent),
        "early, no memo": Variant(spent, REFUSALS.clear),
        "throttle": Variant({**spent, **throttle_only()}),
    }
    return alternating_blocks(token, variants, 429, blocks, per_block)


def report(
    rounds: list[Round],
    args: argparse.Namespace,
    tasks: int,
    exposition: int,
    load: tuple[float, float],
) -> None:
    print()
    print(
        f"Observability overhead: GET {PATH} on {tasks:,} tasks, gunicorn {args.workers} x "
        f"{args.threads} threads, wrk {args.connections} clients, {args.rounds} rounds of "
        f"{args.duration:.0f} s per mode, alternating; {os.cpu_count()} cores shared with "
        f"PostgreSQL and wrk; load average {load[0]:.1f} -> {load[1]:.1f}"
    )
    print()
    header = f"{'mode':<5} {'requests':>9} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'CPU us/req':>11}  per round"
    print(header)
    print("-" * len(header))
    medians = {}
    for mode in MODES:
        mine = [r for r in rounds if r.mode == mode]
        medians[mode] = statistics.median(r.cpu_us for r in mine)
        requests = sum(r.requests for r in mine)
        rps = requests / sum(r.seconds for r in mine)
        print(
            f"{mode:<5} {requests:>9,} {rps:>8.0f} {statistics.median(r.p50_ms for r in mine):>7.2f} "
            f"{statistics.median(r.p99_ms for r in mine):>7.2f} {medians[mode]:>11.0f}  "
            + ", ".join(f"{r.cpu_us:.0f}" for r in mine)
            + (f"  ({sum(r.errors for r in mine)} errors)" if any(r.errors for r in mine) else "")
        )
    ratio = medians["on"] / medians["off"]
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print()
    print(f"CPU per request, on / off: {ratio:.3f} ({verdict} the target <= {TARGET_RATIO})")
    print(f"/metrics exposition after the run: {exposition:,} bytes")
    print(
        "on = METRICS_ENABLED + JSON access log + RATE_LIMITS_ENABLED (quotas never reached: "
        "every request checked and charged, none refused)"
    )


def report_in_process(
    title: str,
    figures: dict[str, list[float]],
    per_block: int,
    load: tuple[float, float],
    baseline: str,
    target: float | None,
) -> None:
    """Median CPU per request of each variant, and each one's ratio to `baseline`."""
    print()
    print(
        f"{title} (Django test client, {len(figures[baseline])} alternating blocks of "
        f"{per_block} requests per variant; load average {load[0]:.1f} -> {load[1]:.1f}):"
    )
    medians = {name: statistics.median(values) * 1e6 for name, values in figures.items()}
    width = max(len(name) for name in figures)
    for name, values in figures.items():
        ratio = medians[name] / medians[baseline]
        print(
            f"  {name:<{width}}  CPU us/req median {medians[name]:>6.0f}  "
            f"(min {min(values) * 1e6:.0f}, max {max(values) * 1e6:.0f})  "
            f"{ratio:.3f}x {baseline}"
        )
    if target is not None:
        first = next(name for name in figures if name != baseline)
        ratio = medians[first] / medians[baseline]
        verdict = "meets" if ratio <= target else "MISSES"
        print(f"  {first} / {baseline}: {ratio:.3f} ({verdict} the target <= {target})")


@contextmanager
def log_lines_to_a_file() -> Iterator[None]:
    """JSON log lines, as production writes them, to a file instead of this terminal."""
    from control_plane.observability.logging import configure_structlog

    log = tempfile.NamedTemporaryFile("w", prefix="bench-obs-inproc-", suffix=".log")  # noqa: SIM115
    real_stderr, sys.stderr = sys.stderr, log
    configure_structlog(log_format="json", level="INFO")
    try:
        yield
    finally:
        sys.stderr = real_stderr
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--duration", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--blocks", type=int, default=20, help="in-process blocks per mode")
    parser.add_argument("--block-requests", type=int, default=100)
    parser.add_argument("--instructions", action="store_true", help="count them (callgrind)")
    parser.add_argument("--instruction-requests", type=int, default=40)
    parser.add_argument("--baseline-tree", type=Path, help="another checkout, for --instructions")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    parser.add_argument("--reuse", action="store_true", help="reuse a kept database")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        parser.error("wrk is not on PATH (apt-get install wrk)")
    os.chdir(ROOT)
    env = bench_env("bench-" + secrets.token_urlsafe(48))
    try:
        if not args.reuse:
            print(f"creating database {BENCH_DB} ...", file=sys.stderr)
            create_database(BENCH_DB)
            subprocess.run(
                [PY, "manage.py", "setup_platform"], cwd=ROOT, check=True,
                env={**env, "DJANGO_SETTINGS_MODULE": "control_plane.settings"},
                stdout=subprocess.DEVNULL,
            )  # fmt: skip
        os.environ.update(env)
        import django

        django.setup()
        from django.db import connection

        tenant, token = make_bench_tenant(args.reuse)
        if not args.reuse:
            print(f"loading {args.tasks:,} tasks ...", file=sys.stderr)
            load_tasks(tenant.schema_name, tenant.pk, args.tasks)
        connection.close()
        servers = {mode: Server(mode, env, args.workers, args.threads) for mode in MODES}
        load_servers = os.getloadavg()[0]
        try:
            for server in servers.values():
                wrk(server, token, args.connections, args.warmup)
            rounds = []
            for number in range(args.rounds):
                for server in servers.values():
                    result = measured(server, token, args.connections, args.duration)
                    rounds.append(result)
                    print(
                        f"round {number + 1} {result.mode}: {result.requests} requests, "
                        f"{result.cpu_us:.0f} us CPU each",
                        file=sys.stderr,
                    )
            load_served_by_servers = (load_servers, os.getloadavg()[0])
            exposition = servers["on"].scrape()
            logged = servers["on"].log_text().count('"event":"request"')
            print(f"access lines written by `on`: {logged:,}", file=sys.stderr)
        finally:
            for server in servers.values():
                server.stop()
        print("in process ...", file=sys.stderr)
        with log_lines_to_a_file():
            load_before = os.getloadavg()[0]
            served = in_process(token, args.blocks, args.block_requests)
            load_served = (load_before, os.getloadavg()[0])
            # Printed now: a refusal run that Redis fails under load must not lose them.
            report(rounds, args, args.tasks, exposition, load_served_by_servers)
            report_in_process(
                "In process, served requests (200)", served, args.block_requests, load_served,
                "off", TARGET_RATIO,
            )  # fmt: skip
            sys.stdout.flush()
            refused = refusals(token, args.blocks, args.block_requests)
            load_refused = (load_served[1], os.getloadavg()[0])
        counted = None
        if args.instructions:
            print("instructions (callgrind) ...", file=sys.stderr)
            trees = {"this tree": Path(ROOT)}
            if args.baseline_tree:
                trees["baseline"] = args.baseline_tree.resolve()
            counted = instructions(trees, args.instruction_requests, token)
        report_in_process(
            "In process, refused requests (429; the quota spent, metrics and access log on)",
            refused, args.block_requests, load_refused, "throttle", None,
        )  # fmt: skip
        if counted is not None:
            report_instructions(counted, args.instruction_requests)
    finally:
        if not (args.keep or args.reuse):
            drop_database(BENCH_DB)


if __name__ == "__main__":
    main()

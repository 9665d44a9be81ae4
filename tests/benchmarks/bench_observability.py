"""What observability costs: a list request's CPU with metrics, JSON logging and rate limiting on vs
all of them off, in the same run.

Run from the repository root (PostgreSQL at 127.0.0.1:5432 with superuser `postgres`, Redis at
127.0.0.1:6379, `wrk` on PATH: `apt-get install wrk`); about 4 minutes:

    .venv/bin/python -m tests.benchmarks.bench_observability [--tasks 100000] [--workers 2]
        [--threads 4] [--connections 8] [--duration 15] [--rounds 3] [--keep] [--reuse]

What it does:

1. Creates the throw-away database `taskflow_bench_obs` (BENCH_DB_NAME) with `setup_platform`,
   one schema-mode tenant with a member's token and --tasks tasks, as bench_taskflow_api does
   (its helpers); Redis BENCH_REDIS_URL (default db 4).
2. Starts two gunicorn servers side by side, each with platform/gunicorn.conf.py (the metrics
   folder of production), --workers x --threads, DEBUG off, stderr (the log lines) to a file:
   `on`: METRICS_ENABLED, LOG_FORMAT=json with the access line, RATE_LIMITS_ENABLED (a no-op
   where the rate limiter has not landed), METRICS_TOKEN set, and a Prometheus-like scrape of
   /metrics once per round; `off`: METRICS_ENABLED=false, ACCESS_LOG=false, LOG_LEVEL=WARNING,
   RATE_LIMITS_ENABLED=false.
3. Rounds alternate on, off, on, off... (after a warm-up of each): wrk with --connections
   keep-alive clients, GET /api/v1/tasks?limit=50 for --duration seconds. The CPU each server's
   worker processes used (user + system, /proc) over the round is divided by the requests it
   answered: CPU per request, which other load on the machine does not change the way it
   changes latency.
4. In this process (django.setup() on the same database, the same settings, a metrics folder
   of its own, the access log to a file): --blocks blocks of --block-requests GET requests
   through Django's test client per mode, modes alternating block by block, each block's
   process CPU time divided by its requests. Other processes' load changes this figure less
   than the servers' (no scheduling between processes, no client), so it is the steadier one
   on a busy machine; the test client's own work is in both modes.
5. Prints the table: per mode the requests, req/s, p50/p99, CPU per request (median of rounds),
   and on/off; then the in-process figure. Target: on/off <= 1.05.
"""

from __future__ import annotations

import os
import tempfile

os.environ.setdefault("BENCH_DB_NAME", "taskflow_bench_obs")
# This process's own metrics folder (step 4), before anything imports prometheus_client.
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="bench-obs-inproc-"))
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")

import argparse
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.benchmarks.bench_onboarding import create_database, drop_database
from tests.benchmarks.bench_taskflow_api import (
    BENCH_DB,
    GUNICORN,
    HOST,
    PY,
    ROOT,
    Http,
    bench_env,
    children,
    cpu_by_pid,
    load_tasks,
    make_bench_tenant,
)
from tests.processes import free_port, stop_process

PATH = "/api/v1/tasks?limit=50"
METRICS_TOKEN = "bench-metrics-" + secrets.token_urlsafe(16)
TARGET_RATIO = 1.05

MODES = {
    "on": {
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


class Server:
    """gunicorn with the platform's hooks, in one mode; its log lines go to a file."""

    def __init__(self, mode: str, env: dict[str, str], workers: int, threads: int) -> None:
        self.mode = mode
        self.port = free_port()
        self.log = tempfile.NamedTemporaryFile(prefix=f"bench-obs-{mode}-", suffix=".log")  # noqa: SIM115
        self.metrics_dir = tempfile.mkdtemp(prefix=f"bench-obs-{mode}-metrics-")
        self.proc = subprocess.Popen(
            [
                GUNICORN, "control_plane.wsgi:application", "-c", "platform/gunicorn.conf.py",
                "--bind", f"127.0.0.1:{self.port}", "--worker-class", "gthread",
                "--workers", str(workers), "--threads", str(threads), "--keep-alive", "30",
                "--backlog", "2048", "--worker-tmp-dir", "/dev/shm",  # noqa: S108 - heartbeats
            ],
            cwd=ROOT,
            env={**env, **MODES[mode], "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir},
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            try:
                if (
                    Http(self.port, HOST, "").get("/healthz")[0] == 200
                    and len(self.worker_pids()) == workers
                ):
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit(f"gunicorn ({mode}) did not start:\n{self.log_text()}")
            time.sleep(0.2)

    def log_text(self) -> str:
        return Path(self.log.name).read_text()

    def worker_pids(self) -> list[int]:
        return children(self.proc.pid)

    def scrape(self) -> int:
        """GET /metrics as Prometheus would; the exposition's size."""
        conn = Http(self.port, "localhost", "")
        conn.headers["Authorization"] = f"Bearer {METRICS_TOKEN}"
        status, body, _ = conn.get("/metrics")
        return len(body) if status == 200 else 0

    def stop(self) -> None:
        stop_process(self.proc, timeout=30)
        self.log.close()
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
    return Round(
        server.mode,
        int(stats["requests"]),
        stats["seconds"],
        cpu,
        stats["p50"],
        stats["p99"],
        int(stats["errors"]),
    )


def in_process(token: str, blocks: int, per_block: int) -> dict[str, list[float]]:
    """CPU seconds per request in this process, by mode, one figure per block."""
    from django.test import Client, override_settings

    from control_plane.observability.logging import configure_structlog

    def settings_of(mode: str) -> dict[str, object]:
        on = mode == "on"
        return {"METRICS_ENABLED": on, "ACCESS_LOG": on, "RATE_LIMITS_ENABLED": on}

    log = tempfile.NamedTemporaryFile("w", prefix="bench-obs-inproc-", suffix=".log")  # noqa: SIM115
    real_stderr, sys.stderr = sys.stderr, log
    configure_structlog(log_format="json", level="INFO")
    headers = {"Authorization": f"Bearer {token}"}
    clients: dict[str, Client] = {}
    figures: dict[str, list[float]] = {mode: [] for mode in MODES}
    try:
        for mode in MODES:  # each client's handler loads its middleware under its mode
            with override_settings(**settings_of(mode)):
                clients[mode] = Client(HTTP_HOST=HOST, headers=headers)
                for _ in range(50):
                    assert clients[mode].get(PATH).status_code == 200
        for block in range(blocks):
            for mode in MODES if block % 2 == 0 else reversed(list(MODES)):
                with override_settings(**settings_of(mode)):
                    started = time.process_time()
                    for _ in range(per_block):
                        clients[mode].get(PATH)
                    figures[mode].append((time.process_time() - started) / per_block)
    finally:
        sys.stderr = real_stderr
        log.close()
    return figures


def report(rounds: list[Round], args: argparse.Namespace, tasks: int, exposition: int) -> None:
    print()
    print(
        f"Observability overhead: GET {PATH} on {tasks:,} tasks, gunicorn {args.workers} x "
        f"{args.threads} threads, wrk {args.connections} clients, {args.rounds} rounds of "
        f"{args.duration:.0f} s per mode, alternating; {os.cpu_count()} cores shared with "
        f"PostgreSQL and wrk"
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
    print("on = METRICS_ENABLED + JSON access log + RATE_LIMITS_ENABLED (if the limiter exists)")


def report_in_process(figures: dict[str, list[float]], per_block: int) -> None:
    print()
    print(
        f"In process (Django test client, {len(figures['on'])} alternating blocks of "
        f"{per_block} requests per mode):"
    )
    medians = {mode: statistics.median(values) * 1e6 for mode, values in figures.items()}
    for mode, values in figures.items():
        print(
            f"  {mode:<4} CPU us/req median {medians[mode]:.0f}  "
            f"(min {min(values) * 1e6:.0f}, max {max(values) * 1e6:.0f})"
        )
    ratio = medians["on"] / medians["off"]
    verdict = "meets" if ratio <= TARGET_RATIO else "MISSES"
    print(f"  on / off: {ratio:.3f} ({verdict} the target <= {TARGET_RATIO})")


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
            exposition = servers["on"].scrape()
            logged = servers["on"].log_text().count('"event":"request"')
            print(f"access lines written by `on`: {logged:,}", file=sys.stderr)
        finally:
            for server in servers.values():
                server.stop()
        print("in process ...", file=sys.stderr)
        figures = in_process(token, args.blocks, args.block_requests)
        report(rounds, args, args.tasks, exposition)
        report_in_process(figures, args.block_requests)
    finally:
        if not (args.keep or args.reuse):
            drop_database(BENCH_DB)


if __name__ == "__main__":
    main()

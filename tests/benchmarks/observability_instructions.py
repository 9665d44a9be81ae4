"""Instructions per list request, observability on vs off, counted by valgrind's callgrind: a
figure a loaded machine does not move (CPU time on 2 cores shared by other work swings 10-20%
between blocks; the overhead target is 5%).

A driver process (this module with --drive) sets Django up on the benchmark's database with
callgrind's instrumentation off (--instr-atstart=no: start-up runs several times faster), turns
it on (callgrind_control), warms one mode (the same settings as bench_observability's in-process
`on` / `off`), then sends --requests GET requests through Django's test client, each inside a
call of functools.reduce of its own: callgrind collects only inside that C function
(--toggle-collect) and writes a count after each call (--dump-after), so start-up and the
warm-up are not counted, and each count is the instructions one request costs this process
(Redis's and PostgreSQL's work is theirs, as the CPU figures leave it out too; so is the
kernel's: a write or a socket call counts as the instructions that make it).

Two figures per mode: the median request, and the mean. The mean carries the garbage
collector's passes, which fall on some requests: the young generations' every few requests (a
cost the on mode's extra allocations share), a full collection of the whole heap (millions of
instructions) now and then, on whichever mode's run it happens to fall; so the mean of a few
dozen requests moves with where the full collections fell, and the median is the ratio to read.

    .venv/bin/python -m tests.benchmarks.observability_instructions --token TOKEN
        [--requests 100] [--tree DIR] [--baseline-tree DIR]

run on a database bench_observability kept (`--keep`; BENCH_DB_NAME / BENCH_REDIS_URL as it
was run with); `--tree` / `--baseline-tree` count another checkout's code (its modules first on
the path, this driver), for a before/after ratio. bench_observability runs it with
--instructions. BENCH_INSTRUCTIONS_PATH counts another request than GET /api/v1/tasks?limit=50.
"""

from __future__ import annotations

import os

os.environ.setdefault("BENCH_DB_NAME", "taskflow_bench_obs")
os.environ.setdefault("BENCH_REDIS_URL", "redis://127.0.0.1:6379/4")

import argparse
import functools
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from tests.benchmarks.quotas import UNREACHABLE_PLANS

ROOT = Path(__file__).resolve().parents[2]
PATH = "/api/v1/tasks?limit=50"
MODES = ("on", "off")
WARM_REQUESTS = 30


def mode_settings(mode: str, key_prefix: str) -> dict[str, Any]:
    """bench_observability's in-process `on` and `off`; the cache epoch read once in either (its
    re-read every second falls on a varying number of requests under valgrind)."""
    if mode == "off":
        return {
            "METRICS_ENABLED": False,
            "ACCESS_LOG": False,
            "RATE_LIMITS_ENABLED": False,
            "CACHE_EPOCH_CHECK_SECONDS": 3600,
        }
    return {
        "CACHE_EPOCH_CHECK_SECONDS": 3600,
        "METRICS_ENABLED": True,
        "ACCESS_LOG": True,
        "RATE_LIMITS_ENABLED": True,
        "RATE_LIMIT_PLANS": UNREACHABLE_PLANS,
        "RATE_LIMIT_KEY_PREFIX": key_prefix,
    }


def drive(mode: str, requests: int, token: str) -> None:
    """Warm `mode`, then send `requests` requests inside functools.reduce (what is counted)."""
    from tests.benchmarks.bench_taskflow_api import HOST, bench_env

    os.environ.update(bench_env(os.environ.get("BENCH_SECRET_KEY", "bench-instructions")))
    import django

    django.setup()
    from django.test import Client, override_settings

    from control_plane.observability.logging import configure_structlog
    from tenants import switches

    # A read switch is re-read from the database every CACHE_S and reported to Redis every
    # REPORT_S: at valgrind's speed that fell on a varying share of the requests (an ORM query
    # on about every other one), a count the machine's load moved. Once, in the warm-up.
    switches.CACHE_S = switches.REPORT_S = 3600.0

    log = tempfile.NamedTemporaryFile("w", prefix="bench-obs-instr-", suffix=".log")  # noqa: SIM115
    sys.stderr = log
    configure_structlog(log_format="json", level="INFO")
    import tenants.switches

    # The read switches' once-a-second read and report, like the cache epoch's, would fall on a
    # varying number of requests under valgrind's slowness: read once, while warming.
    tenants.switches.CACHE_S = tenants.switches.REPORT_S = 3600.0
    instrument()
    with override_settings(**mode_settings(mode, f"rl-bench-instr-{os.getpid()}")):
        client = Client(HTTP_HOST=HOST, headers={"Authorization": f"Bearer {token}"})

        def one(_: None, __: int) -> None:
            status = client.get(os.environ.get("BENCH_INSTRUCTIONS_PATH", PATH)).status_code
            if status != 200:
                raise SystemExit(f"{mode}: {status}, not 200")

        for number in range(WARM_REQUESTS):
            one(None, number)
        for number in range(requests):  # a reduce each: callgrind writes each request's count
            functools.reduce(one, (number,), None)
    sys.stderr = sys.__stderr__
    log.close()


def instrument() -> None:
    """Turn callgrind's instrumentation on in this process, when it runs under callgrind. The
    process must keep running guest code meanwhile: callgrind reads the command between blocks
    of it, and callgrind_control waits for the answer."""
    if "valgrind" not in os.environ.get("LD_PRELOAD", ""):
        return
    control = subprocess.Popen(
        ["callgrind_control", "--instr=on", str(os.getpid())], stdout=subprocess.DEVNULL
    )
    spins = 0
    while control.poll() is None:
        spins += 1
    if control.returncode:
        raise SystemExit(f"callgrind_control failed ({control.returncode})")


def count(tree: Path, mode: str, requests: int, token: str) -> list[int]:
    """Instructions of each request of `tree`'s code in `mode` (one callgrind run)."""
    with tempfile.TemporaryDirectory(prefix="bench-obs-callgrind-") as folder:
        out = Path(folder) / "callgrind.out"
        env = {
            **os.environ,
            "PYTHONPATH": str(tree),
            "PYTHONHASHSEED": "0",
            "PROMETHEUS_MULTIPROC_DIR": folder,
        }
        subprocess.run(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--collect-atstart=no",
             "--toggle-collect=functools_reduce", "--dump-after=functools_reduce",
             "--dump-instr=no", f"--callgrind-out-file={out}",
             sys.executable, str(Path(__file__).resolve()), "--drive", mode,
             "--requests", str(requests), "--token", token],
            cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        counts = []
        for dump in sorted(Path(folder).glob("callgrind.out.*")):
            totals = re.search(r"^(?:summary|totals): (\d+)", dump.read_text(), re.M)
            if totals is not None and int(totals.group(1)):
                counts.append(int(totals.group(1)))
        if len(counts) != requests:
            raise SystemExit(f"{len(counts)} counts in {folder}, not {requests}")
        return counts


def instructions(trees: dict[str, Path], requests: int, token: str) -> dict[str, dict[str, float]]:
    """Instructions per request by tree and mode: `on` / `off` the median request, `on mean` /
    `off mean` the mean."""
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not on PATH (apt-get install valgrind)")
    figures: dict[str, dict[str, float]] = {}
    for name, tree in trees.items():
        figures[name] = {}
        for mode in MODES:
            counts = count(tree, mode, requests, token)
            figures[name][mode] = statistics.median(counts)
            figures[name][f"{mode} mean"] = statistics.mean(counts)
    return figures


def report(figures: dict[str, dict[str, float]], requests: int) -> None:
    print()
    print(
        f"Instructions per request in process (callgrind, {requests} requests per mode after "
        f"{WARM_REQUESTS} warm; this process's only: the load average does not move them; the "
        "mean with the garbage collector's passes, wherever they fell):"
    )
    for name, modes in figures.items():
        for label, on, off in (
            ("median", modes["on"], modes["off"]),
            ("mean", modes["on mean"], modes["off mean"]),
        ):
            print(
                f"  {name:<10} {label:<6} on {on:>12,.0f}  off {off:>12,.0f}  "
                f"on/off {on / off:.3f}  (on - off {on - off:,.0f})"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--token", required=True)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--tree", type=Path, default=ROOT)
    parser.add_argument("--baseline-tree", type=Path)
    parser.add_argument("--drive", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    if args.drive:
        drive(args.drive, args.requests, args.token)
        return
    trees = {"tree": args.tree.resolve()}
    if args.baseline_tree:
        trees["baseline"] = args.baseline_tree.resolve()
    figures = instructions(trees, args.requests, args.token)
    report(figures, args.requests)
    if args.json:
        print(json.dumps(figures))


if __name__ == "__main__":
    main()

"""Two checkouts' TaskFlow API on one database, measured side by side (bench_taskflow_api
--baseline-tree).

Both gunicorns run at once from the same venv, each from its own tree; wrk rounds alternate
between them (the order flips every round, so a drift in the machine's other load falls on both),
over the same paths: the default sort's pages and the mixed-direction sort with filtered lists.
While one is measured the other is idle. Per round: the server's worker processes' CPU time and
its PostgreSQL backends' (every backend of the benchmark database: the idle server's cost
nothing) over the requests served, wrk's latency percentiles, and the machine's load average.
With --tenant-save, the tenant is saved (renamed) before every round, its cache forgets written
under that round's server's key prefix, as a save in the admin would: what every request costs
in the minutes after a tenant changes. The figure to read is the ratio of CPU per request: CPU time, unlike wall time, does not grow
with the queue other sessions' work makes on a shared machine. An A/A run (the same tree twice)
shows what spread of that ratio is noise.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks import bench_taskflow_api as bench

LOADS = ("taskflow", "mixed")
LABELS = {"taskflow": "default sort (created_at)", "mixed": "mixed sort + filtered lists"}


@dataclass
class TreeRound:
    tree: str  # "candidate" or "baseline"
    load: str
    number: int
    requests: float
    stats: dict[str, float]
    app_cpu: float  # seconds, gunicorn workers
    pg_cpu: float  # seconds, the database's backends
    loadavg: float

    @property
    def app_us(self) -> float:
        return self.app_cpu / self.requests * 1e6

    @property
    def all_us(self) -> float:
        return (self.app_cpu + self.pg_cpu) / self.requests * 1e6


def save_tenant(tenant: Any, server: bench.Server, number: int) -> None:
    """Rename the tenant, its forgets (hosts and tokens, tenants.signals and the principal
    signals) written where `server` reads its cache."""
    from django.core.cache import caches

    cache = caches["default"]
    prefix = cache.key_prefix
    cache.key_prefix = server.cache_prefix
    try:
        tenant.name = f"API benchmark {server.cache_prefix} {number}"
        tenant.save()  # autocommit: committed, so its tombstones settle at once where they can
    finally:
        cache.key_prefix = prefix


def measure(
    servers: dict[str, bench.Server],
    token: str,
    paths: dict[str, list[str]],
    connections: int,
    duration: float,
    rounds: int,
    warmup: float,
    tenant: Any = None,
) -> list[TreeRound]:
    """`rounds` interleaved rounds of each load on each server, after a warm-up of each."""
    workdir = Path(tempfile.mkdtemp(prefix="bench-trees-"))
    try:
        script = workdir / "paths.lua"
        script.write_text(bench.WRK_SCRIPT)
        files = {}
        for load in LOADS:
            files[load] = workdir / f"{load}.txt"
            files[load].write_text("\n".join(paths[load]) + "\n")
        for server in servers.values():
            for load in LOADS:
                bench.run_wrk(server, token, str(files[load]), str(script), connections, warmup)
        results: list[TreeRound] = []
        names = list(servers)
        for number in range(1, rounds + 1):
            order = names if number % 2 else names[::-1]
            for load in LOADS:
                for name in order:
                    server = servers[name]
                    bench.drain(server)
                    if tenant is not None:
                        save_tenant(tenant, server, number)
                    workers = server.worker_pids()
                    before_app = bench.cpu_by_pid(workers)
                    before_pg = bench.cpu_by_pid(bench.postgres_backends())
                    loadavg = os.getloadavg()[0]
                    stats = bench.run_wrk(
                        server, token, str(files[load]), str(script), connections, duration
                    )
                    app = bench.cpu_since(before_app, workers)
                    pg = bench.cpu_since(before_pg, bench.postgres_backends())
                    errors = sum(
                        stats[k] for k in ("connect", "read", "write", "status", "timeout")
                    )
                    measured = TreeRound(
                        name, load, number, stats["requests"], stats, app, pg, loadavg
                    )
                    results.append(measured)
                    print(
                        f"  {name} {load} round {number}: {stats['requests']:.0f} requests,"
                        f" {measured.app_us:.0f} us gunicorn CPU/request, {measured.all_us:.0f}"
                        f" us with PostgreSQL, p99 {stats['p99'] / 1000:.1f} ms, errors"
                        f" {errors:.0f}, load {loadavg:.2f}",
                        file=bench.sys.stderr,
                    )
        return results
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _pooled(rounds: list[TreeRound]) -> dict[str, float]:
    requests = sum(r.requests for r in rounds)
    return {
        "requests": requests,
        "app_us": sum(r.app_cpu for r in rounds) / requests * 1e6,
        "all_us": sum(r.app_cpu + r.pg_cpu for r in rounds) / requests * 1e6,
        "p50": statistics.median(r.stats["p50"] for r in rounds) / 1000,
        "p90": statistics.median(r.stats["p90"] for r in rounds) / 1000,
        "p99": statistics.median(r.stats["p99"] for r in rounds) / 1000,
        "rps": requests / sum(r.stats["duration_us"] for r in rounds) * 1e6,
    }


def table(
    results: list[TreeRound],
    trees: dict[str, Path],
    connections: int,
    duration: float,
    tenant_saved: bool = False,
) -> list[str]:
    """Per load: each tree's pooled CPU per request and median percentiles, the ratio
    candidate/baseline pooled and per round pair (its spread is the run's noise)."""
    rounds = max(r.number for r in results)
    lines = [
        f"Side by side: candidate {trees['candidate']} vs baseline {trees['baseline']}, one"
        f" database, wrk -c{connections}, {rounds} interleaved rounds of {duration:g} s per load"
        " and tree (order flipped each round)"
        + ("; the tenant saved before every round" if tenant_saved else ""),
        "   CPU/request = CPU time of the server's gunicorn workers (and + its PostgreSQL"
        " backends) / requests; latency = median over rounds of wrk's per-round percentiles, ms;"
        f" load average {min(r.loadavg for r in results):.2f}-{max(r.loadavg for r in results):.2f}"
        " at the rounds' starts",
        f"{'load':<30} {'tree':<10} {'requests':>8} {'req/s':>6} {'gunicorn us':>11}"
        f" {'+pg us':>7} {'p50':>6} {'p90':>6} {'p99':>6}",
    ]
    width = 30 + 11 + 9 + 7 + 12 + 8 + 7 * 3
    lines.append("-" * width)
    summary: list[str] = []
    for load in LOADS:
        pooled = {}
        for tree in ("candidate", "baseline"):
            mine = [r for r in results if r.load == load and r.tree == tree]
            pooled[tree] = p = _pooled(mine)
            lines.append(
                f"{LABELS[load]:<30} {tree:<10} {p['requests']:>8.0f} {p['rps']:>6.0f}"
                f" {p['app_us']:>11.0f} {p['all_us']:>7.0f} {p['p50']:>6.1f} {p['p90']:>6.1f}"
                f" {p['p99']:>6.1f}"
            )
        pairs = [
            (c, b)
            for c in results
            if c.load == load and c.tree == "candidate"
            for b in results
            if b.load == load and b.tree == "baseline" and b.number == c.number
        ]
        per_round = [c.app_us / b.app_us for c, b in pairs]  # in round order
        per_round_all = [c.all_us / b.all_us for c, b in pairs]
        cand, base = pooled["candidate"], pooled["baseline"]
        summary.append(
            f"{LABELS[load]}: CPU/request candidate/baseline = {cand['app_us'] / base['app_us']:.3f}"
            f" gunicorn (rounds in order {', '.join(f'{x:.3f}' for x in per_round)}),"
            f" {cand['all_us'] / base['all_us']:.3f} with PostgreSQL"
            f" (rounds {', '.join(f'{x:.3f}' for x in per_round_all)});"
            f" p50 {cand['p50'] / base['p50']:.2f}x, p99 {cand['p99'] / base['p99']:.2f}x"
        )
    lines.append("-" * width)
    return [*lines, *summary]


def run(
    env: dict[str, str], args: Any, token: str, paths: dict[str, list[str]], tenant: Any
) -> tuple[list[TreeRound], dict[str, Path]]:
    """Start both servers, check both answer every path alike, measure, stop them."""
    trees = {"candidate": args.tree.resolve(), "baseline": args.baseline_tree.resolve()}
    servers: dict[str, bench.Server] = {}
    try:
        for name, tree in trees.items():
            servers[name] = bench.Server(env, args.workers, args.threads, tree=tree, name=name)
        for load in LOADS:
            for path in paths[load]:
                answers = [
                    bench.Http(s.port, bench.HOST, token).json(path)["results"]
                    for s in servers.values()
                ]
                assert answers[0] == answers[1], ("trees answer differently", path)
        results = measure(
            servers, token, paths, args.connections, args.duration, args.rounds, args.warmup,
            tenant if args.tenant_save else None,
        )  # fmt: skip
        return results, trees
    finally:
        for server in servers.values():
            server.stop()

"""The proof-under-load harness of an evolution: API clients at a fixed rate against the web
processes of a rolling deploy, a sampler of lock waits in PostgreSQL, and latency per phase.

The clients keep their schedule (a request every 1/rate s, not one after the other as fast as
they can), so a phase that slows the API shows as latency, not as fewer requests. Every
response is recorded with the phase the test says is running; every write the API
acknowledged is kept (task, version, UTC day) so the test can look for it in the database.
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg

from tests.processes import request_json

OLD_VERSION = "2026-12-01"  # names due_date
NEW_VERSION = "2026-12-06"  # names due_at


@dataclass
class Web:
    """One web process of the deploy, reached on 127.0.0.1 with a tenant's Host header."""

    name: str
    port: int
    in_rotation: bool = True  # the load balancer sends it requests

    def request(
        self, method: str, path: str, host: str, body: Any, headers: dict[str, str]
    ) -> tuple[int, Any]:
        return request_json(self.port, method, path, host, body, headers)


@dataclass(frozen=True)
class Target:
    """A tenant the clients write to: its host, a member's token and a project of its own."""

    name: str
    host: str
    token: str
    project: int


@dataclass(frozen=True)
class Ack:
    """A write the API acknowledged: this task has this version and this due UTC day."""

    target: str
    task: int
    version: int
    day: str


@dataclass
class Record:
    """Every response, by phase, and every acknowledged write."""

    latencies: dict[str, list[float]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    by_process: dict[str, int] = field(default_factory=dict)
    late_starts: int = 0  # ticks whose request started over one interval late
    lock: threading.Lock = field(default_factory=threading.Lock)

    def response(self, phase: str, web: str, seconds: float, status: int, what: str) -> None:
        with self.lock:
            self.latencies.setdefault(phase, []).append(seconds)
            self.by_process[web] = self.by_process.get(web, 0) + 1
            if status >= 400:
                self.failures.append(f"{phase}: {status} {what}")

    def count(self, phase: str) -> int:
        with self.lock:
            return len(self.latencies.get(phase, []))


def percentile(values: Sequence[float], share: float) -> float:
    """The nearest-rank percentile (share in 0..1) of `values`."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(share * len(ordered)) - 1))
    return ordered[rank]


class Load:
    """Clients of both API versions against every web process in rotation, at a fixed rate."""

    def __init__(self, webs: dict[str, Web], targets: Sequence[Target], rate_per_client: float):
        self.webs = webs
        self.targets = targets
        self.interval = 1 / rate_per_client
        self.phase = "idle"
        self.record = Record()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for target in self.targets:
            for version in (OLD_VERSION, NEW_VERSION):
                thread = threading.Thread(
                    target=self._client, args=(target, version), name=f"{target.name}-{version}"
                )
                thread.start()
                self._threads.append(thread)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)

    def _client(self, target: Target, version: str) -> None:
        try:
            _Client(self, target, version).run()
        except Exception as exc:  # a dead client must fail the test, not thin the load
            with self.record.lock:
                self.record.failures.append(f"{target.name} {version}: {exc!r}")


class _Client:
    """One client: create, patch, list (sorted by the due key) and filter, in turn."""

    def __init__(self, load: Load, target: Target, version: str) -> None:
        self.load, self.target, self.version = load, target, version
        self.rng = random.Random(f"{target.name}-{version}")
        self.old = version == OLD_VERSION
        self.field = "due_date" if self.old else "due_at"
        self.mine: list[tuple[int, int]] = []  # (task, version)
        self.headers = {"Authorization": f"Bearer {target.token}", "TaskFlow-Version": version}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        live = [w for w in self.load.webs.values() if w.in_rotation]
        web = self.rng.choice(live)
        phase = self.load.phase
        started = time.perf_counter()
        status, payload = web.request(method, path, self.target.host, body, self.headers)
        elapsed = time.perf_counter() - started
        what = f"{web.name} {self.version} {method} {path} {body} -> {payload}"
        self.load.record.response(phase, web.name, elapsed, status, what)
        return status, payload

    def run(self) -> None:
        tick, start = 0, time.monotonic()
        while not self.load._stop.is_set():
            due = start + tick * self.load.interval
            now = time.monotonic()
            if now < due:
                if self.load._stop.wait(due - now):
                    return
            elif now - due > self.load.interval:
                with self.load.record.lock:
                    self.load.record.late_starts += 1
            self.step(tick)
            tick += 1

    def step(self, tick: int) -> None:
        day = f"20{30 + tick % 5}-0{1 + tick % 9}-{10 + tick % 18}"
        value = day if self.old or tick % 2 else f"{day}T{tick % 24:02d}:15:00Z"
        kind = tick % 4
        if kind == 0 or not self.mine:
            status, task = self.call(
                "POST", "/api/v1/tasks",
                {"project_id": self.target.project, "title": f"load-{tick}", self.field: value},
            )  # fmt: skip
            if status == 201:
                self._acked(task["id"], task["version"], day)
        elif kind == 1:
            index = self.rng.randrange(len(self.mine))
            task_id, seen = self.mine[index]
            status, task = self.call(
                "PATCH", f"/api/v1/tasks/{task_id}", {self.field: value, "version": seen}
            )
            if status == 200:
                self._acked(task_id, task["version"], day, index)
        elif kind == 2:
            self.call("GET", f"/api/v1/tasks?sort=-priority,{self.field}&limit=5")
        else:
            self.call("GET", f"/api/v1/tasks?due_after=2031-03-01&sort={self.field}&limit=5")

    def _acked(self, task: int, version: int, day: str, index: int | None = None) -> None:
        if index is None:
            self.mine.append((task, version))
        else:
            self.mine[index] = (task, version)
        with self.load.record.lock:
            self.load.record.acks.append(Ack(self.target.name, task, version, day))


@dataclass(frozen=True)
class LockWait:
    pid: int
    seconds: float
    locktype: str
    mode: str
    query: str


class LockWaitSampler:
    """Samples pg_locks every `every` s: the longest wait of each waiting statement seen.

    `waitstart` (PostgreSQL 14+) against clock_timestamp(), so a sample reads how long the
    wait has lasted, not only that it exists."""

    QUERY = (
        "SELECT l.pid, extract(epoch FROM clock_timestamp() - l.waitstart)::float8,"
        " l.locktype, l.mode, left(a.query, 300), l.waitstart"
        " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE NOT l.granted AND l.waitstart IS NOT NULL AND a.datname = current_database()"
    )

    def __init__(self, connect: Callable[[], psycopg.Connection[Any]], every: float = 0.1):
        self.connect = connect
        self.every = every
        self.longest: dict[tuple[int, Any], LockWait] = {}
        self.samples = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lock-waits")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        try:
            with self.connect() as conn:
                while not self._stop.wait(self.every):
                    for pid, seconds, locktype, mode, query, since in conn.execute(self.QUERY):
                        key = (pid, since)
                        seen = self.longest.get(key)
                        if seen is None or seen.seconds < seconds:
                            self.longest[key] = LockWait(pid, seconds, locktype, mode, query)
                    self.samples += 1
        except Exception as exc:  # reported by the test: no sampling is no proof
            self.error = repr(exc)

    def worst(self) -> LockWait | None:
        return max(self.longest.values(), key=lambda w: w.seconds, default=None)

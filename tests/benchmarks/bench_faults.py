"""The fault table: 12 clients on schema and rls tenants through gunicorn and real workers, each
fault caused for real on a private PostgreSQL cluster and a private Redis, and what it cost.

    .venv/bin/python -m tests.benchmarks.bench_faults [--clients 12] [--only pg_fast,redis_down]
        [--import-rows 20000] [--kill-rows 150000] [--keep]

Per fault it prints: responses by status while the fault lasted (`err`: no HTTP answer within
the client's 10 s), seconds from the fault's end to the first 2xx, seconds from the fault's end
until every job in flight during it (an import and an onboarding submitted just before, or
queued when the broker lost them) finished, acknowledged writes missing afterwards (a task
answered 201 whose row is not there), and jobs completed twice (an import whose rows were
written by more than one attempt, seen in the tasks' history; an onboarding with more than one
owner membership or token). A worker that exits by itself is started again, as compose's
`restart: unless-stopped` does, and counted ("worker exits restarted").

Nothing here touches the shared PostgreSQL or Redis: the cluster, Redis, gunicorn, the worker
and beat are children of this process, on their own ports and folders, removed at the end
(`--keep` leaves the folders). Production settings (DJANGO_ENV=production), the production
visibility timeout (an hour), beat's recovery every 5 s and 5 s leases.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import http.client
import io
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.fanout.private_platform import OWNER, PrivateCluster, PrivatePlatform
from tests.processes import free_port, kill_process_tree, stop_process

ROOT = Path(__file__).resolve().parents[2]
CLIENT_TIMEOUT_S = 10.0
JOB_BOUND_S = 120.0  # give up waiting for stranded jobs after this (the target is 60 s)

TENANT_CODE = """
import json
from tests.taskflow.conftest import provisioned_tenant
from tenants.models import Isolation
out = []
for isolation in [Isolation.SCHEMA, Isolation.RLS] * {per_mode}:
    fixture = provisioned_tenant(isolation)
    out.append({{"host": fixture.host, "token": fixture.tokens["member"],
                "tenant_id": fixture.tenant.pk, "schema": fixture.tenant.schema_name,
                "isolation": str(isolation)}})
print(json.dumps(out))
"""

ONBOARD_CODE = """
from control_plane.tenancy.onboarding import submit_onboarding
for slug in {slugs!r}:
    submit_onboarding(fields={{"name": slug, "slug": slug, "domain": slug + ".localhost",
                               "isolation": "rls" if slug.endswith("r") else "schema",
                               "owner_email": slug + "@example.com"}})
"""


class RestartableRedis:
    """A private redis-server on a fixed port with an append-only file (as dev and compose run
    it), stopped and started again by the faults; `wipe` loses its data as a disk would."""

    def __init__(self, root: Path) -> None:
        self.port, self.dir = free_port(), root / "redis"
        self.dir.mkdir()
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "everysec", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for_port(self.port)

    def stop(self, wipe: bool = False) -> None:
        if self.process is not None:
            stop_process(self.process)
        if wipe:
            shutil.rmtree(self.dir)
            self.dir.mkdir()


def wait_for_port(port: int, timeout: float = 20) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


@dataclass
class Tenant:
    host: str
    token: str
    tenant_id: int
    schema: str
    isolation: str
    project_id: int = 0


@dataclass
class Response:
    started: float
    ended: float
    kind: str  # read | write
    status: str
    tenant: int = 0
    task_id: int = 0


@dataclass
class Load:
    """12 client threads, each on one tenant, reading and writing until stopped."""

    port: int
    tenants: list[Tenant]
    clients: int
    responses: list[Response] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, args=(i,), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _client(self, i: int) -> None:
        tenant = self.tenants[i % len(self.tenants)]
        n = 0
        while not self.stop.is_set():
            n += 1
            write = n % 4 == 0
            started = time.monotonic()
            try:
                if write:
                    body = json.dumps({"project_id": tenant.project_id, "title": f"c{i}-{n}"})
                    status, payload = request(
                        self.port,
                        "POST",
                        "/api/v1/tasks",
                        tenant,
                        body.encode(),
                        "application/json",
                    )
                else:
                    status, payload = request(self.port, "GET", "/api/v1/tasks?limit=20", tenant)
                code = str(status)
            except (OSError, http.client.HTTPException):
                code, payload = "err", b""
            task_id = 0
            if write and code == "201":
                task_id = int(json.loads(payload)["id"])
            self.responses.append(
                Response(started, time.monotonic(), "write" if write else "read", code,
                         tenant.tenant_id, task_id)
            )  # fmt: skip
            if code == "err":
                time.sleep(0.1)

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=CLIENT_TIMEOUT_S + 5)


def request(
    port: int, method: str, path: str, tenant: Tenant, body: bytes | None = None,
    content_type: str = "", **headers: str,
) -> tuple[int, bytes]:  # fmt: skip
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT_S)
    try:
        sent = {"Host": tenant.host, "Authorization": f"Bearer {tenant.token}", **headers}
        if content_type:
            sent["Content-Type"] = content_type
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def csv_of(rows: int, prefix: str) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(("external_id", "project", "title", "status", "priority"))
    for i in range(rows):
        writer.writerow((f"{prefix}-{i:07d}", "P1", f"Imported {i}", "todo", i % 5))
    return out.getvalue().encode()


@dataclass
class Jobs:
    """The jobs in flight during one fault: imports (tenant, id, rows, prefix) and onboardings."""

    imports: list[tuple[Tenant, int, int, str]] = field(default_factory=list)
    onboardings: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.root = Path(tempfile.mkdtemp(prefix="bench-faults-", dir="/var/tmp"))
        if os.getuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self.logs = self.root / "logs"
        self.logs.mkdir()
        self.cluster = PrivateCluster().init_and_start()
        self.redis = RestartableRedis(self.root)
        self.platform = PrivatePlatform(self.cluster, self.redis, self.logs)  # type: ignore[arg-type]
        self.platform.env.update(
            DJANGO_SETTINGS_MODULE="control_plane.settings", DJANGO_ENV="production",
            DEBUG="false", SECRET_KEY=secrets.token_urlsafe(48), PYTHONUNBUFFERED="1",
            IMPORT_UPLOAD_DIR=str(self.root / "imports"),
        )  # fmt: skip
        self.worker: subprocess.Popen[bytes] | None = None
        self.port = free_port()
        self.tenants: list[Tenant] = []
        self.sequence = 0
        self.restarts: list[float] = []  # when a worker's own exit was noticed
        self.closing, self.supervising = threading.Event(), threading.Event()
        self.supervisor = threading.Thread(target=self.supervise, daemon=True)

    # --- processes ----------------------------------------------------------------------------

    def setup(self) -> None:
        result = self.platform.manage("setup_platform")
        if result.returncode:
            raise RuntimeError(result.stderr[-3000:])
        made = self.platform.python(TENANT_CODE.format(per_mode=2)).stdout.strip().splitlines()[-1]
        self.tenants = [Tenant(**t) for t in json.loads(made)]
        self.platform.spawn(
            "gunicorn", sys.executable, "-m", "gunicorn", "control_plane.wsgi:application",
            "--bind", f"127.0.0.1:{self.port}", "--workers", "2", "--threads", "4",
            "--timeout", "120",
        )  # fmt: skip
        wait_for_port(self.port, timeout=60)
        self.start_worker()
        self.supervising.set()
        self.supervisor.start()
        self.platform.spawn(
            "beat", sys.executable, "-m", "celery", "-A", "control_plane", "beat", "-l", "info",
            "-s", str(self.root / "beat-schedule"),
        )  # fmt: skip
        for tenant in self.tenants:
            body = json.dumps({"key": "P1", "name": "Faults"}).encode()
            status, payload = request(
                self.port, "POST", "/api/v1/projects", tenant, body, "application/json"
            )
            if status != 201:
                raise RuntimeError(f"project: {status} {payload[:500]!r}")
            tenant.project_id = int(json.loads(payload)["id"])

    def spawn_worker(self) -> tuple[subprocess.Popen[bytes], Path, Path, str]:
        """A worker on every queue, as compose runs it."""
        self.sequence += 1
        name = f"w{self.sequence}"
        self.worker, out, err = self.platform.spawn(
            name, sys.executable, "-m", "celery", "-A", "control_plane", "worker",
            "-Q", "default,migrations,imports", "-c", "2", "-n", f"{name}@bench",
            "--without-gossip", "--without-mingle", "-l", "info",
        )  # fmt: skip
        return self.worker, out, err, name

    def supervise(self) -> None:
        """What compose's `restart: unless-stopped` does for the worker: a worker that exits on
        its own (not stopped by a fault) is started again, and counted."""
        while not self.closing.is_set():
            worker = self.worker
            if self.supervising.is_set() and worker is not None and worker.poll() is not None:
                self.restarts.append(time.monotonic())
                print(
                    f"   worker exited by itself (code {worker.returncode}); restarted", flush=True
                )
                self.spawn_worker()
            time.sleep(0.5)

    def start_worker(self, timeout: float = 60) -> None:
        """A worker on every queue; returns once it is ready."""
        self.worker, out, err, name = self.spawn_worker()
        deadline = time.monotonic() + timeout
        while " ready." not in err.read_text() + out.read_text():
            if self.worker.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"worker {name} not ready: {err.read_text()[-2000:]}")
            time.sleep(0.2)

    def stop_worker(self) -> None:
        if self.worker is not None:
            stop_process(self.worker, timeout=30)

    def close(self) -> None:
        self.closing.set()
        self.platform.stop()
        self.redis.stop()
        self.cluster.destroy()
        if not self.args.keep:
            shutil.rmtree(self.root, ignore_errors=True)
        else:
            print(f"kept {self.root}")

    # --- jobs ---------------------------------------------------------------------------------

    def submit_import(self, jobs: Jobs, rows: int) -> None:
        self.sequence += 1
        tenant = self.tenants[self.sequence % len(self.tenants)]
        prefix = f"F{self.sequence}"
        status, payload = request(
            self.port, "POST", "/api/v1/imports", tenant, csv_of(rows, prefix), "text/csv",
            **{"Idempotency-Key": prefix},
        )  # fmt: skip
        if status != 202:
            raise RuntimeError(f"import: {status} {payload[:500]!r}")
        jobs.imports.append((tenant, int(json.loads(payload)["id"]), rows, prefix))

    def submit_onboarding(self, jobs: Jobs) -> None:
        self.sequence += 1
        slugs = [f"ob{self.sequence}s", f"ob{self.sequence}r"]
        self.platform.python(ONBOARD_CODE.format(slugs=slugs))
        jobs.onboardings.extend(slugs)

    def import_attempts(self, jobs: Jobs) -> int:
        """Attempts of the fault's imports so far: one picked up again counts one more."""
        return int(
            self.owner_query(
                "SELECT coalesce(sum(attempts), 0) FROM public.imports_importjob"
                " WHERE id = ANY(%s)",
                [job_id for _, job_id, _, _ in jobs.imports],
            )[0][0]
        )

    def import_status(self, job_id: int) -> tuple[str, str]:
        row = self.owner_query(
            "SELECT status, phase FROM public.imports_importjob WHERE id = %s", job_id
        )
        return (str(row[0][0]), str(row[0][1])) if row else ("?", "")

    def jobs_done(self, jobs: Jobs) -> bool:
        try:
            for _, job_id, _, _ in jobs.imports:
                if self.import_status(job_id)[0] not in {"succeeded", "failed", "cancelled"}:
                    return False
            if jobs.onboardings:
                rows = self.owner_query(
                    "SELECT count(*) FROM public.tenants_tenant WHERE slug = ANY(%s)"
                    " AND status IN ('active', 'failed')",
                    jobs.onboardings,
                )
                return rows[0][0] == len(jobs.onboardings)
        except psycopg.Error:
            return False
        return True

    def owner_query(self, sql: str, *params: Any, tenant_id: int | None = None) -> list[Any]:
        with psycopg.connect(self.cluster.url(OWNER), connect_timeout=2) as conn:
            if tenant_id is not None:
                conn.execute("SELECT set_config('app.tenant_id', %s, false)", [str(tenant_id)])
            return conn.execute(sql, params).fetchall()

    def completed_twice(self, jobs: Jobs) -> int:
        twice = 0
        for tenant, job_id, rows, prefix in jobs.imports:
            schema = tenant.schema if tenant.isolation == "schema" else "shared"
            writes = self.owner_query(
                f"SELECT count(*) FROM {schema}.tasks_history h JOIN {schema}.tasks t"
                " ON t.id = h.row_id AND t.tenant_id = h.tenant_id WHERE t.external_id LIKE %s",
                prefix + "-%",
                tenant_id=tenant.tenant_id,
            )[0][0]
            status = self.import_status(job_id)[0]
            if status == "succeeded" and writes != rows:
                twice += 1
        for slug in jobs.onboardings:
            owners = self.owner_query(
                "SELECT (SELECT count(*) FROM public.control_plane_membership m WHERE m.tenant_id = t.id),"
                " (SELECT count(*) FROM public.control_plane_apitoken a WHERE a.tenant_id = t.id)"
                " FROM public.tenants_tenant t WHERE t.slug = %s",
                slug,
            )
            if owners and (owners[0][0] > 1 or owners[0][1] > 1):
                twice += 1
        return twice

    def missing_writes(self, responses: list[Response]) -> int:
        missing = 0
        by_tenant: dict[int, list[int]] = {}
        for r in responses:
            if r.task_id:
                by_tenant.setdefault(r.tenant, []).append(r.task_id)
        for tenant in self.tenants:
            ids = by_tenant.get(tenant.tenant_id, [])
            if not ids:
                continue
            schema = tenant.schema if tenant.isolation == "schema" else "shared"
            found = self.owner_query(
                f"SELECT count(*) FROM {schema}.tasks WHERE id = ANY(%s)",
                ids,
                tenant_id=tenant.tenant_id,
            )[0][0]
            missing += len(ids) - found
        return missing


# --- the faults ---------------------------------------------------------------------------------


def pg_stop_start(mode: str, down_s: float) -> Callable[[Bench], None]:
    def fault(bench: Bench) -> None:
        bench.cluster.pg_ctl("-m", mode, "-w", "stop")
        time.sleep(down_s)
        bench.cluster.start()

    return fault


def redis_down(bench: Bench) -> None:
    bench.redis.stop()
    time.sleep(15)
    bench.redis.start()


def redis_sigstop(bench: Bench) -> None:
    assert bench.redis.process is not None
    os.kill(bench.redis.process.pid, signal.SIGSTOP)
    time.sleep(10)
    os.kill(bench.redis.process.pid, signal.SIGCONT)


def worker_sigkill(bench: Bench) -> None:
    assert bench.worker is not None
    bench.supervising.clear()
    kill_process_tree(bench.worker.pid)
    bench.worker.wait()
    bench.start_worker()  # what a supervisor (compose's restart policy) does
    bench.supervising.set()


def redis_restart_losing(bench: Bench) -> None:
    bench.redis.stop(wipe=True)
    bench.redis.start()
    bench.start_worker()
    bench.supervising.set()


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    cause: Callable[[Bench], None]


FAULTS = (
    Fault("pg_fast", "PostgreSQL restart -m fast", pg_stop_start("fast", 0)),
    Fault("pg_immediate", "PostgreSQL restart -m immediate", pg_stop_start("immediate", 0)),
    Fault("pg_stop_10s", "PostgreSQL stopped 10 s", pg_stop_start("fast", 10)),
    Fault("redis_down", "Redis down 15 s (AOF kept)", redis_down),
    Fault("redis_sigstop", "Redis SIGSTOP 10 s", redis_sigstop),
    Fault("worker_sigkill", "worker SIGKILL mid-import", worker_sigkill),
    Fault("redis_lost", "Redis restart losing queued messages", redis_restart_losing),
)


@dataclass
class Row:
    fault: str
    statuses: Counter[str]
    reads_2xx: float
    first_2xx_s: float | None
    jobs_s: float | None
    resumed_s: float | None
    began: float
    restarts: int
    missing: int
    twice: int


def prepare_jobs(bench: Bench, fault: Fault) -> Jobs:
    jobs = Jobs()
    if fault.name == "worker_sigkill":
        bench.submit_import(jobs, bench.args.kill_rows)
        deadline = time.monotonic() + 120
        while bench.import_status(jobs.imports[0][1]) != ("running", "writing"):
            if time.monotonic() > deadline:
                raise RuntimeError("the import never reached its writing phase")
            time.sleep(0.05)
        return jobs
    if fault.name == "redis_lost":
        bench.supervising.clear()
        bench.stop_worker()  # the jobs wait in the queue when the broker loses them
    bench.submit_onboarding(jobs)
    bench.submit_import(jobs, bench.args.import_rows)
    return jobs


def stranded_picked_up(bench: Bench, jobs: Jobs, before: int) -> bool:
    """Every unfinished import is on a new attempt (sent again and taken by a worker)."""
    try:
        unfinished = any(
            bench.import_status(job_id)[0] in {"queued", "running"}
            for _, job_id, _, _ in jobs.imports
        )
        return not unfinished or bench.import_attempts(jobs) > before
    except psycopg.Error:
        return False


def run_fault(bench: Bench, load: Load, fault: Fault) -> Row:
    began = time.monotonic()
    jobs = prepare_jobs(bench, fault)
    before = bench.import_attempts(jobs)
    caused = time.monotonic()
    fault.cause(bench)
    ended = time.monotonic()
    done_at = resumed_at = None
    while time.monotonic() - ended < JOB_BOUND_S:
        if bench.jobs_done(jobs):
            done_at = time.monotonic()
            resumed_at = resumed_at or done_at
            break
        if resumed_at is None and stranded_picked_up(bench, jobs, before):
            resumed_at = time.monotonic()
        time.sleep(0.25)
    time.sleep(2)  # answers after the fault, for the first 2xx
    during = [r for r in list(load.responses) if caused <= r.started < ended]
    statuses = Counter(r.status for r in during)
    reads = [r for r in during if r.kind == "read"]
    reads_2xx = sum(r.status.startswith("2") for r in reads) / len(reads) if reads else 1.0
    after = [r.ended for r in list(load.responses) if r.ended >= ended and r.status.startswith("2")]
    return Row(
        fault=fault.description,
        statuses=statuses,
        reads_2xx=reads_2xx,
        first_2xx_s=min(after) - ended if after else None,
        jobs_s=max(0.0, done_at - ended) if done_at is not None else None,
        resumed_s=max(0.0, resumed_at - ended) if resumed_at is not None else None,
        began=began,
        restarts=0,
        missing=0,
        twice=bench.completed_twice(jobs),
    )


def print_table(rows: list[Row]) -> None:
    print()
    print("| fault | responses during the fault | reads 2xx | first 2xx after (s) |"
          " stranded imports on a new attempt after (s) | stranded jobs done after (s) |"
          " worker exits restarted | acknowledged writes missing | jobs completed twice |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for row in rows:
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(row.statuses.items()))
        first = f"{row.first_2xx_s:.1f}" if row.first_2xx_s is not None else "none"
        jobs = f"{row.jobs_s:.1f}" if row.jobs_s is not None else f"> {JOB_BOUND_S:.0f}"
        resumed = f"{row.resumed_s:.1f}" if row.resumed_s is not None else f"> {JOB_BOUND_S:.0f}"
        print(
            f"| {row.fault} | {statuses} | {100 * row.reads_2xx:.1f}% | {first} | {resumed} |"
            f" {jobs} | {row.restarts} |"
            f" {row.missing} | {row.twice} |"
        )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--only", default="", help="comma-separated fault names")
    parser.add_argument("--import-rows", type=int, default=20_000)
    parser.add_argument("--kill-rows", type=int, default=60_000)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds of load between faults")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args(argv)
    chosen = [f for f in FAULTS if not args.only or f.name in args.only.split(",")]
    bench = Bench(args)
    rows: list[Row] = []
    try:
        bench.setup()
        load = Load(bench.port, bench.tenants, args.clients)
        load.start()
        for fault in chosen:
            time.sleep(args.settle)
            print(f"-- {fault.description}", flush=True)
            rows.append(run_fault(bench, load, fault))
            print_table(rows[-1:])
        time.sleep(args.settle)
        load.finish()
        missing = bench.missing_writes(load.responses)
        for i, row in enumerate(rows):
            row.missing = missing  # counted once over the whole run (no write may be lost)
            until = rows[i + 1].began if i + 1 < len(rows) else float("inf")
            # A worker that dies of a fault may take a while to exit (its pool finishes first):
            # its exit belongs to the fault in whose time, up to the next fault, it was noticed.
            row.restarts = sum(row.began <= t < until for t in bench.restarts)
        total = Counter(r.status for r in load.responses)
        print(f"\n{len(load.responses)} responses in all: {dict(total)};"
              f" acknowledged writes {sum(1 for r in load.responses if r.task_id)}, missing {missing}")  # fmt: skip
        print_table(rows)
    finally:
        bench.close()


if __name__ == "__main__":
    main()

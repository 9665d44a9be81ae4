"""Liveness and readiness checks: what a load balancer or orchestrator asks of a process.

Probes answer anyone, unauthenticated: a failed check says only that it failed. Its exception
(which names hosts, ports, roles) goes to the log, never into the response.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import redis
from django.conf import settings
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils.module_loading import import_string
from django_tenants.utils import schema_context

logger = logging.getLogger(__name__)
FAILED = "unavailable"


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    ms: float


_migrations_applied = False


def check_postgres() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "reachable"


def check_redis() -> str:
    client = redis.Redis.from_url(settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    finally:
        client.close()
    return "reachable"


def check_public_migrations() -> str:
    """Public-schema migrations are applied; once seen applied, a process does not look again."""
    global _migrations_applied
    if _migrations_applied:
        return "applied"
    with schema_context("public"):
        executor = MigrationExecutor(connection)
        plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if plan:
        raise RuntimeError(f"{len(plan)} migrations not applied")
    _migrations_applied = True
    return "applied"


CHECKS: dict[str, Callable[[], str]] = {
    "postgres": check_postgres,
    "redis": check_redis,
    "migrations": check_public_migrations,
}


def run_warnings() -> list[dict[str, Any]]:
    """What an operator should know that does not make this process unready (settings
    READINESS_WARNINGS: callables returning [{"name", "ok", "detail"}], cheap and cached, such
    as queues that no worker consumes). A warning that fails is itself a warning, without detail."""
    warnings: list[dict[str, Any]] = []
    for path in settings.READINESS_WARNINGS:
        try:
            warnings += import_string(path)()
        except Exception:
            logger.warning("readiness warning %s failed", path, exc_info=True)
            warnings.append({"name": path.rsplit(".", 1)[-1], "ok": None, "detail": FAILED})
    return warnings


def run_checks() -> list[Check]:
    results = []
    for name, check in CHECKS.items():
        started = time.perf_counter()
        try:
            detail, ok = check(), True
        except Exception:
            logger.warning("readiness check %s failed", name, exc_info=True)
            detail, ok = FAILED, False
        results.append(Check(name, ok, detail, round((time.perf_counter() - started) * 1000, 2)))
    return results

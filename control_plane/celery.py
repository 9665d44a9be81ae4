"""The Celery application: one broker (Redis), three queues, late acknowledgement.

Tasks that change data are acks_late with reject_on_worker_lost (the defaults here), so a worker
killed mid-task leaves its message on the queue for another worker instead of losing it.
"""

from __future__ import annotations

import os

from celery import Celery
from celery.schedules import crontab
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "control_plane.settings")

QUEUES = ("default", "migrations", "imports")

app = Celery("control_plane")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = [Queue(name) for name in QUEUES]
app.conf.task_routes = {
    "control_plane.fanout.*": {"queue": "migrations"},
    "control_plane.imports.*": {"queue": "imports"},
}
app.conf.beat_schedule = {
    "refill-spare-schemas": {"task": "tenants.tasks.refill_spares", "schedule": 60.0},
    "restore-forced-row-security": {
        "task": "tenants.tasks.restore_forced_row_security",
        "schedule": 60.0,
        "options": {"expires": 55},
    },
    "reap-stuck-migration-runs": {
        "task": "control_plane.fanout.reap_stuck_runs",
        "schedule": 60.0,
        "options": {"expires": 55},  # a worker back from an outage runs one, not a backlog
    },
    "reap-dead-migration-lanes": {
        "task": "control_plane.fanout.reap_dead_lanes",
        "schedule": 2.0,
        "options": {"expires": 2},
    },
    "recover-stranded-jobs": {
        "task": "control_plane.worker.recover_stranded_jobs",
        "schedule": float(os.environ.get("RECOVERY_INTERVAL_SECONDS", "5")),
        "options": {"expires": float(os.environ.get("RECOVERY_INTERVAL_SECONDS", "5"))},
    },
    "settle-evolutions": {
        "task": "control_plane.evolution.settle_evolutions",
        "schedule": 5.0,
        "options": {"expires": 5},
    },
    "purge-soft-deleted": {
        "task": "taskflow.tasks.purge_soft_deleted",
        "schedule": crontab(hour=3, minute=17),
    },
    "remove-old-import-files": {
        "task": "control_plane.imports.tasks.remove_old_files",
        "schedule": crontab(hour=3, minute=47),
    },
}
# Each installed app's tasks module, and those of the control plane's domain packages, which
# share the app "control_plane" (its own tasks module would be the only one found there).
app.autodiscover_tasks()
app.autodiscover_tasks(["control_plane.tenancy", "control_plane.worker"])
app.autodiscover_tasks(["taskflow"], related_name="upkeep")


def broker_unreachable_errors() -> tuple[type[BaseException], ...]:
    """What publishing raises when the broker cannot be reached (not a bug of the caller)."""
    import kombu.exceptions
    import redis.exceptions

    return (kombu.exceptions.OperationalError, redis.exceptions.RedisError, OSError)


def refuse_while_broker_down() -> None:
    """503 before anything is recorded when the broker is known to be down.

    The broker is the cache's Redis unless configured apart: while the cache's breaker is open
    (control_plane.http.redis_cache) a job would be recorded and its message lost.
    """
    from django.conf import settings
    from django.core.cache import cache

    breaker = getattr(cache, "breaker", None)
    if breaker is not None and breaker.tripped and app.conf.broker_url == settings.REDIS_URL:
        raise broker_unavailable()


def broker_unavailable() -> Exception:
    from tenants.outages import RETRY_AFTER_SECONDS, ServiceUnavailable

    return ServiceUnavailable(
        "The job queue cannot be reached just now; nothing was recorded, retry shortly.",
        retry_after=RETRY_AFTER_SECONDS,
    )

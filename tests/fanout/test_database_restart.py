"""PostgreSQL restarted in the middle of a run, on a private cluster of the test's own.

The batch tasks retry their connection errors with backoff instead of being acknowledged as
done, so the run moves again within seconds of the database answering (not when the stuck-run
reaper wakes up, ten minutes on), and `fanout_migrate --wait` reconnects and watches the run to
its success instead of exiting with a traceback.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.fanout.private_platform import PrivateCluster, PrivatePlatform, PrivateRedis
from tests.fanout.support import wait_until
from tests.migrations_sqla.support import TEST_REVISION, make_script_dir

pytestmark = [pytest.mark.worker]

TENANTS = 80
RECOVERY_LIMIT_S = 30.0


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivatePlatform]:
    cluster = PrivateCluster().init_and_start()
    redis = PrivateRedis()
    platform = PrivatePlatform(cluster, redis, tmp_path_factory.mktemp("private_logs"))
    try:
        setup = platform.manage("setup_platform")
        assert setup.returncode == 0, setup.stdout[-2000:] + setup.stderr[-4000:]
        yield platform
    finally:
        platform.stop()
        redis.stop()
        cluster.destroy()


def succeeded(cluster: PrivateCluster) -> int | None:
    """Tenants of the newest run recorded succeeded; None while the database does not answer."""
    try:
        rows = cluster.query(
            "SELECT count(*) FROM fanout_tenantmigration WHERE status = 'succeeded'"
            " AND tenant_id IS NOT NULL"
            " AND run_id = (SELECT max(id) FROM fanout_migrationrun)"
        )
    except psycopg.OperationalError:
        return None
    return int(rows[0][0])  # type: ignore[call-overload]


def test_a_postgresql_restart_mid_run_costs_seconds_and_the_cli_watches_through_it(
    platform: PrivatePlatform, tmp_path: Path
) -> None:
    cluster = platform.cluster
    location = make_script_dir(tmp_path / "slow_scripts", sleep_ms=100)
    platform.python(
        "from tests.migrations_sqla.support import make_tenants\n"
        f"make_tenants('restart', {TENANTS})\n"
    )
    platform.start_worker("restart")
    cli, out, err = platform.spawn(
        "cli", sys.executable, "manage.py", "fanout_migrate", "--canary", "0", "--concurrency",
        "2", "--batch-size", "10", "--script-location", location, "--wait", "--timeout", "240",
    )  # fmt: skip
    wait_until(lambda: (succeeded(cluster) or 0) >= 10, timeout=120, interval=0.1)
    before = succeeded(cluster) or 0
    assert before < TENANTS, "the run finished before the restart"

    cluster.restart()
    back = time.monotonic()
    wait_until(lambda: (succeeded(cluster) or 0) > before, timeout=120, interval=0.1)
    recovery = time.monotonic() - back
    print(f"run moving again {recovery:.2f}s after PostgreSQL answered again")

    assert cli.wait(timeout=240) == 0, out.read_text()[-2000:] + err.read_text()[-4000:]
    stdout, stderr = out.read_text(), err.read_text()
    assert "succeeded: every tenant at" in stdout
    assert "database unavailable" in stderr
    assert "Traceback" not in stderr
    assert recovery < RECOVERY_LIMIT_S
    worker_log = (platform.logs / "restart.err").read_text()
    assert "Retry in" in worker_log  # the batch was sent again, not acknowledged as done

    runs = cluster.query("SELECT status FROM fanout_migrationrun ORDER BY id DESC LIMIT 1")
    assert runs == [("succeeded",)]
    states = cluster.query(
        "SELECT status, count(*) FROM fanout_tenantmigration WHERE tenant_id IS NOT NULL"
        " GROUP BY status"
    )
    assert states == [("succeeded", TENANTS)]
    versions = cluster.query(
        "SELECT DISTINCT (xpath('/row/v/text()', query_to_xml(format("
        "'SELECT version_num AS v FROM %%I.alembic_version', schema_name), false, true, '')))[1]"
        "::text FROM tenants_tenant WHERE slug LIKE 'restart%%'"
    )
    assert versions == [(TEST_REVISION,)]

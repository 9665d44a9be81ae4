"""Schemathesis over every operation of both API descriptions, against a live server.

Each run loads the schema the server serves (the tenant API on a schema-mode and on an rls-mode
tenant's host, the operator API on the public host with a staff token), runs every phase
(explicit examples, coverage, fuzzing, and the stateful phase that follows the description's
links: create -> get -> patch with the ETag -> delete -> restore) and requires zero failures of
the checks named below.

The CI slice is short and seeded. The long profile (tens of thousands of cases):

    SCHEMATHESIS_EXAMPLES=1000 platform/dev.sh pytest tests/contract/test_schemathesis.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from taskflow.api_versions import CATALOG, VERSION_HEADER
from tests.contract.conftest import PUBLIC_HOST
from tests.processes import Gunicorn
from tests.taskflow.conftest import TenantFixture

# What must hold for every response, under the names schemathesis 4 gives them.
CHECKS: tuple[str, ...] = (
    "not_a_server_error",  # no 5xx
    "response_schema_conformance",  # bodies match the described schema
    "status_code_conformance",  # no undocumented status
    "content_type_conformance",
    "response_headers_conformance",
    "negative_data_rejection",  # a schema-invalid request is rejected
    "positive_data_acceptance",  # a schema-valid one is not (schemathesis.toml: which statuses)
)
EXAMPLES = int(os.environ.get("SCHEMATHESIS_EXAMPLES", "10"))
SEED = int(os.environ.get("SCHEMATHESIS_SEED", "20261206"))
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
CONFIG = Path(__file__).with_name("schemathesis.toml")
HOOKS = Path(__file__).with_name("schemathesis_hooks.py")


def run_schemathesis(
    server: Gunicorn,
    schema_path: str,
    host: str,
    token: str,
    reports: Path,
    headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One `schemathesis run` over the schema at `schema_path`; returns its JSON run report."""
    status, _, body = server.request(
        "GET", schema_path, host, Authorization=f"Bearer {token}", Accept="application/json"
    )
    assert status == 200, body[:500]
    schema_file = reports / "schema.json"
    schema_file.write_bytes(body)
    command = [
        str(SCHEMATHESIS), "--config-file", str(CONFIG), "run", str(schema_file),
        "--url", server.origin,
        "--header", f"Host: {host}",
        "--header", f"Authorization: Bearer {token}",
        *(option for header in headers for option in ("--header", header)),
        "--checks", ",".join(CHECKS),
        "--max-examples", str(EXAMPLES),
        "--seed", str(SEED),
        "--generation-deterministic",
        # Generation speed is the fuzzer's concern, not the API's: on a loaded 2-core machine a
        # 20,000-character text field's pattern can trip it (POST .../comments did).
        "--suppress-health-check", "too_slow",
        "--workers", "1",
        "--request-timeout", "30",
        "--report", "junit,ndjson",
        "--report-dir", str(reports),
        "--no-color",
    ]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=reports,
        env=os.environ | {"SCHEMATHESIS_HOOKS": str(HOOKS)},
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    (reports / "stdout.txt").write_text(result.stdout + result.stderr)
    return {
        "exit_code": result.returncode,
        "summary": summarise(reports),
        "output": result.stdout + result.stderr,  # the test prints it: shown when it fails
    }


def summarise(reports: Path) -> dict[str, Any]:
    """Cases run and failures by check, read from the ndjson event stream."""
    cases = 0
    failures: dict[str, int] = {}
    for path in reports.glob("*.ndjson"):
        for line in path.read_text().splitlines():
            event = json.loads(line)
            for name, payload in event.items():
                if name == "ScenarioFinished":
                    for case in (payload.get("recorder") or {}).get("cases", {}).values():
                        cases += 1 if case else 0
                    for checks in (payload.get("recorder") or {}).get("checks", {}).values():
                        for check in checks:
                            if check.get("status") == "failure":
                                failures[check["name"]] = failures.get(check["name"], 0) + 1
    return {"cases": cases, "failures": failures}


@pytest.fixture(scope="module")
def tenant_api_runs(
    api_server: Gunicorn,
    contract_tenants: dict[str, TenantFixture],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, Future[dict[str, Any]]]]:
    """Both modes' runs at once: each is one client process against a server of 2 workers, and
    their tenants share nothing, so the second needs no wait for the first (the operator API's
    run, which may suspend or move any tenant it finds, runs alone after them).

    The served document describes the newest API version, so every request names it: an older
    version answers as its own document (openapi/tenant-<version>.yaml) says, which
    tests/taskflow/test_api_versions.py checks change by change."""
    with ThreadPoolExecutor(max_workers=len(contract_tenants)) as pool:
        yield {
            mode: pool.submit(
                run_schemathesis,
                api_server,
                "/api/v1/schema",
                tenant.host,
                tenant.tokens["admin"],
                tmp_path_factory.mktemp(f"schemathesis-{mode}"),
                (f"{VERSION_HEADER}: {CATALOG.latest.name}",),
            )
            for mode, tenant in contract_tenants.items()
        }


@pytest.mark.parametrize("mode", ["schema", "rls"])
def test_tenant_api_conforms_to_its_description(
    tenant_api_runs: dict[str, Future[dict[str, Any]]], mode: str
) -> None:
    outcome = tenant_api_runs[mode].result()
    print(outcome["output"])
    print(f"tenant API, {mode} mode: {outcome['summary']}")
    assert outcome["exit_code"] == 0, outcome["summary"]


def test_operator_api_conforms_to_its_description(
    api_server: Gunicorn, staff_token: str, tmp_path: Path
) -> None:
    outcome = run_schemathesis(api_server, "/ops/v1/schema", PUBLIC_HOST, staff_token, tmp_path)
    print(outcome["output"])
    print(f"operator API: {outcome['summary']}")
    assert outcome["exit_code"] == 0, outcome["summary"]

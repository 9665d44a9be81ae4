"""A typed client generated from the committed description drives a real scenario.

openapi-python-client generates the client from `openapi/tenant-v1.yaml` into a temporary
directory during the test run (never committed); the scenario then runs against the live server
and a real Celery worker: create a project and tasks, walk the task list page by page by
cursor, meet a 412 on a stale If-Match and recover by re-reading, import a CSV and poll the job.
"""

from __future__ import annotations

import importlib
import io
import pkgutil
import subprocess
import sys
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import ROOT
from tests.contract.conftest import LiveServer
from tests.taskflow.conftest import TenantFixture

DOCUMENT = ROOT / "openapi" / "tenant-v1.yaml"
PACKAGE = "taskflow_contract_client"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture(scope="module")
def generated_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package, generated from the committed document into a temporary directory."""
    out = tmp_path_factory.mktemp("client")
    config = out / "config.yaml"
    config.write_text(f"package_name_override: {PACKAGE}\npost_hooks: []\n")
    result = subprocess.run(
        [
            str(GENERATOR), "generate", "--path", str(DOCUMENT), "--meta", "none",
            "--config", str(config), "--output-path", str(out / PACKAGE), "--fail-on-warning",
        ],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(out))
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(out))
        for name in [m for m in sys.modules if m == PACKAGE or m.startswith(PACKAGE + ".")]:
            del sys.modules[name]


class Operations:
    """The generated operation modules, found by operationId whatever tag holds them."""

    def __init__(self, package: ModuleType) -> None:
        api = importlib.import_module(f"{package.__name__}.api")
        self.modules: dict[str, ModuleType] = {}
        for info in pkgutil.walk_packages(api.__path__, f"{api.__name__}."):
            if not info.ispkg:
                self.modules[info.name.rsplit(".", 1)[1]] = importlib.import_module(info.name)

    def __getitem__(self, operation: str) -> ModuleType:
        assert operation in self.modules, f"no operation {operation}: {sorted(self.modules)}"
        return self.modules[operation]

    def body_type(self, operation: str) -> Any:
        """The generated model of the operation's request body (its first typed variant)."""
        hints = typing.get_type_hints(self[operation].sync_detailed)
        candidates = typing.get_args(hints["body"]) or (hints["body"],)
        return next(c for c in candidates if hasattr(c, "from_dict"))


def call(operation: ModuleType, **kwargs: Any) -> Any:
    """`sync_detailed` with only the keyword arguments the generated function declares."""
    accepted = typing.get_type_hints(operation.sync_detailed)
    return operation.sync_detailed(**{k: v for k, v in kwargs.items() if k in accepted})


def cursor_of(link: Any) -> str | None:
    if not isinstance(link, str):
        return None
    return parse_qs(urlsplit(link).query)["cursor"][0]


def test_generated_client_runs_a_scenario(
    generated_client: ModuleType,
    api_server: LiveServer,
    contract_tenants: dict[str, TenantFixture],
    celery_worker_process: Any,
) -> None:
    tenant = contract_tenants["schema"]
    client_module = importlib.import_module(f"{PACKAGE}.client")
    client = client_module.AuthenticatedClient(
        base_url=api_server.origin,
        token=tenant.tokens["member"],
        headers={"Host": tenant.host},
        raise_on_unexpected_status=True,
    )
    ops = Operations(generated_client)

    # A project and tasks, through the generated models.
    project = call(
        ops["create_project"],
        client=client,
        body=ops.body_type("create_project").from_dict({"key": "GEN", "name": "Generated"}),
    )
    assert project.status_code == 201, project.content
    project_id = project.parsed.id
    task_body = ops.body_type("create_task")
    created = []
    for number in range(7):
        response = call(
            ops["create_task"],
            client=client,
            body=task_body.from_dict({"project_id": project_id, "title": f"Task {number}"}),
        )
        assert response.status_code == 201, response.content
        created.append(response.parsed.id)

    # Every task, page by page, following the cursor of each page's next link.
    seen: list[int] = []
    cursor: str | None = None
    pages = 0
    while True:
        kwargs: dict[str, Any] = {"client": client, "project_id": project_id, "limit": 3}
        if cursor:
            kwargs["cursor"] = cursor
        page = call(ops["list_tasks"], **kwargs)
        assert page.status_code == 200, page.content
        seen.extend(task.id for task in page.parsed.results)
        pages += 1
        cursor = cursor_of(page.parsed.next_)
        if cursor is None:
            break
    assert sorted(seen) == sorted(created)
    assert pages == 3

    # A stale If-Match is a 412; the client re-reads and writes again with the fresh ETag.
    task_id = created[0]
    first = call(ops["get_task"], client=client, task_id=task_id)
    stale_etag = first.headers["ETag"]
    update_body = ops.body_type("update_task")
    moved = update(ops, client, task_id, stale_etag, update_body.from_dict({"title": "Moved"}))
    assert moved.status_code == 200, moved.content
    stale = update(ops, client, task_id, stale_etag, update_body.from_dict({"title": "Again"}))
    assert stale.status_code == 412, stale.content
    fresh = call(ops["get_task"], client=client, task_id=task_id)
    retried = update(
        ops, client, task_id, fresh.headers["ETag"], update_body.from_dict({"title": "Again"})
    )
    assert retried.status_code == 200, retried.content
    assert retried.parsed.title == "Again"

    # A CSV import, polled until the worker finishes it.
    csv_text = "external_id,project,title,status,priority\n" + "".join(
        f"GEN-{i},GEN,Imported {i},todo,{i % 5}\n" for i in range(25)
    )
    job = import_csv(ops, client, generated_client, csv_text.encode())
    assert job.status_code == 202, job.content
    job_id = job.parsed.id
    status = poll(lambda: call(ops["get_import"], client=client, job_id=job_id).parsed)
    assert status.status == "succeeded", status
    imported = call(ops["list_tasks"], client=client, project_id=project_id, limit=100)
    assert len(imported.parsed.results) == 7 + 25


def update(ops: Operations, client: Any, task_id: int, etag: str, body: Any) -> Any:
    """updateTask with If-Match, as a declared parameter or else as a header of the client."""
    operation = ops["update_task"]
    if "if_match" in typing.get_type_hints(operation.sync_detailed):
        return call(operation, client=client, task_id=task_id, body=body, if_match=etag)
    return call(operation, client=client.with_headers({"If-Match": etag}), task_id=task_id, body=body)  # fmt: skip


def import_csv(ops: Operations, client: Any, package: ModuleType, content: bytes) -> Any:
    """createImport with the CSV as the body the description names (a file or a form)."""
    types = importlib.import_module(f"{package.__name__}.types")
    upload = types.File(payload=io.BytesIO(content), file_name="tasks.csv", mime_type="text/csv")
    body_type = ops.body_type("create_import")
    body = body_type(file=upload) if hasattr(body_type, "to_multipart") else upload
    return call(ops["create_import"], client=client, body=body)


def poll(read: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        job = read()
        if job.status in {"succeeded", "failed", "cancelled"} and job.finished_at:
            return job
        assert time.monotonic() < deadline, f"import still {job.status} after {timeout}s"
        time.sleep(0.2)

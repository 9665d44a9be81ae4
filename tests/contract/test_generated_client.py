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
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.conftest import ROOT
from tests.processes import Gunicorn
from tests.taskflow.conftest import TenantFixture

DOCUMENT = ROOT / "openapi" / "tenant-v1.yaml"
PACKAGE = "taskflow_contract_client"
GENERATOR = Path(sys.executable).with_name("openapi-python-client")


@pytest.fixture(scope="module")
def generated_client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package, generated from the committed document into a temporary directory."""
    out = tmp_path_factory.mktemp("client")
    config = out / "config.yaml"
    # The import's text/csv body is a file upload to the generator.
    config.write_text(
        f"package_name_override: {PACKAGE}\npost_hooks: []\n"
        "content_type_overrides:\n  text/csv: application/octet-stream\n"
    )
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
    """The generated operation modules by operationId (snake case), whatever tag holds them."""

    def __init__(self, package: ModuleType) -> None:
        api = importlib.import_module(f"{package.__name__}.api")
        self.modules: dict[str, ModuleType] = {}
        for info in pkgutil.walk_packages(api.__path__, f"{api.__name__}."):
            if not info.ispkg:
                self.modules[info.name.rsplit(".", 1)[1]] = importlib.import_module(info.name)

    def __getattr__(self, operation: str) -> Callable[..., Any]:
        assert operation in self.modules, f"no operation {operation}: {sorted(self.modules)}"
        return self.modules[operation].sync_detailed


def cursor_of(link: str | None) -> str | None:
    """The cursor of a page's next link (None on the last page)."""
    return None if link is None else parse_qs(urlsplit(link).query)["cursor"][0]


def test_generated_client_runs_a_scenario(
    generated_client: ModuleType,
    api_server: Gunicorn,
    contract_tenants: dict[str, TenantFixture],
    celery_worker_process: Any,
) -> None:
    tenant = contract_tenants["schema"]
    models = importlib.import_module(f"{PACKAGE}.models")
    types = importlib.import_module(f"{PACKAGE}.types")
    client = importlib.import_module(f"{PACKAGE}.client").AuthenticatedClient(
        base_url=api_server.origin,
        token=tenant.tokens["member"],
        headers={"Host": tenant.host},
        raise_on_unexpected_status=True,
    )
    api = Operations(generated_client)

    # A project and tasks, through the generated models.
    project = api.create_project(client=client, body=models.ProjectCreate(key="GEN", name="Gen"))
    assert project.status_code == 201, project.content
    project_id = project.parsed.id
    created = []
    for number in range(7):
        body = models.TaskCreate(project_id=project_id, title=f"Task {number}")
        task = api.create_task(client=client, body=body)
        assert task.status_code == 201, task.content
        assert task.headers["ETag"] == f'"{task.parsed.version}"'
        created.append(task.parsed.id)

    # Every task, page by page, following the cursor of each page's next link.
    seen: list[int] = []
    cursor, pages = None, 0
    while True:
        page = api.list_tasks(
            client=client, project=project_id, limit=3, **({"cursor": cursor} if cursor else {})
        )
        assert page.status_code == 200, page.content
        seen.extend(task.id for task in page.parsed.results)
        pages += 1
        cursor = cursor_of(page.parsed.next_)
        if cursor is None:
            break
    assert sorted(seen) == sorted(created)
    assert pages == 3

    # Another writer moves the task on; the stale If-Match is a 412, so the client re-reads and
    # writes again with the fresh ETag.
    task_id = created[0]
    etag = api.get_task(task_id, client=client).headers["ETag"]
    moved = api.update_task(task_id, client=client, body=models.TaskPatch(title="Moved"), if_match=etag)  # fmt: skip
    assert moved.status_code == 200, moved.content
    stale = api.update_task(task_id, client=client, body=models.TaskPatch(title="Mine"), if_match=etag)  # fmt: skip
    assert stale.status_code == 412, stale.content
    fresh = api.get_task(task_id, client=client)
    assert fresh.parsed.title == "Moved"
    mine = api.update_task(
        task_id, client=client, body=models.TaskPatch(title="Mine"), if_match=fresh.headers["ETag"]
    )
    assert mine.status_code == 200, mine.content
    assert mine.parsed.title == "Mine"

    # A CSV import, as the text/csv body, polled until the worker finishes it.
    csv_text = "external_id,project,title,status,priority\n" + "".join(
        f"GEN-{i},GEN,Imported {i},todo,{i % 5}\n" for i in range(25)
    )
    upload = types.File(payload=io.BytesIO(csv_text.encode()), file_name="tasks.csv")
    job = api.create_import(client=client, body=upload)
    assert job.status_code == 202, job.content
    job_id = job.parsed.id
    finished = poll(lambda: api.get_import(job_id, client=client).parsed)
    assert str(finished.status) == "succeeded", finished
    imported = api.list_tasks(client=client, project=project_id, limit=100)
    assert len(imported.parsed.results) == 7 + 25


def poll(read: Callable[[], Any], timeout: float = 60) -> Any:
    """The job once finished (and its finish recorded), read every 0.2 s."""
    deadline = time.monotonic() + timeout
    while True:
        job = read()
        if str(job.status) in {"succeeded", "failed", "cancelled"} and job.finished_at:
            return job
        assert time.monotonic() < deadline, f"import still {job.status} after {timeout}s"
        time.sleep(0.2)

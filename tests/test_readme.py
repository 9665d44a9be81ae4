"""The README says what the code does: the import columns table is the one declaration's, and
the API link it gives answers.

Regenerate the table after changing FILE_COLUMNS: `.venv/bin/python -m tests.test_readme`.
"""

from __future__ import annotations

import re

import pytest
from django.test import Client

from taskflow.imports.columns import FILE_COLUMNS
from tests.conftest import ROOT

README = ROOT / "README.md"
SECTION = re.compile(r"(<!-- import-columns:[^\n]*-->\n)(.*?)(<!-- /import-columns -->)", re.S)


def columns_table() -> str:
    """The README's table of import columns, from FILE_COLUMNS."""
    lines = ["| column | required | what it holds |", "| --- | --- | --- |"]
    lines += [f"| `{c.name}` | {'yes' if c.required else ''} | {c.meaning} |" for c in FILE_COLUMNS]
    return "\n".join(lines) + "\n"


def test_the_readme_lists_every_import_column_as_declared() -> None:
    match = SECTION.search(README.read_text())
    assert match, "README.md lost its import-columns section"
    assert match.group(2) == columns_table(), "run: .venv/bin/python -m tests.test_readme"
    assert all(c.meaning for c in FILE_COLUMNS), "every import column says what it holds"


@pytest.mark.django_db
def test_the_api_link_in_the_readme_answers(client: Client) -> None:
    from tests.factories import make_tenant

    make_tenant("readme_demo", domain="readme-demo.localhost")
    assert "http://demo.localhost:8000/api/v1/" in README.read_text()
    root = client.get("/api/v1/", HTTP_HOST="readme-demo.localhost")
    assert root.status_code == 200
    links = root.json()["links"]
    assert client.get(links["docs"], HTTP_HOST="readme-demo.localhost").status_code == 200
    assert client.get(links["schema"], HTTP_HOST="readme-demo.localhost").status_code == 200
    assert client.get(links["tasks"], HTTP_HOST="readme-demo.localhost").status_code == 401


if __name__ == "__main__":
    text = README.read_text()
    README.write_text(SECTION.sub(lambda m: m.group(1) + columns_table() + m.group(3), text))

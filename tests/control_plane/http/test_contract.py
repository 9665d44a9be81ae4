"""The committed contract (openapi/): fresh, and guarded by openapi-diff against breaking changes
unless they ship as a new API version."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from control_plane.http import contract
from control_plane.http.contract import (
    CONTRACT_DIR,
    OPENAPI_DIFF,
    breaking_changes,
    check,
    generate,
    write,
)
from taskflow.openapi import EVERY_VERSION_HEADERS, REQUEST_ID_PATTERN

OPS = next(document for document in contract.DOCUMENTS if document.name == "ops")


@pytest.fixture(scope="module")
def ops_document() -> dict[str, Any]:
    return yaml.safe_load(generate(OPS))


def dump(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False)


def test_the_committed_contract_matches_the_code() -> None:
    assert check() == []


def test_a_removed_response_field_is_breaking_with_the_tools_message(
    ops_document: dict[str, Any],
) -> None:
    old = copy.deepcopy(ops_document)
    tenant = old["components"]["schemas"]["Tenant"]
    tenant["properties"]["region"] = {"type": "string"}
    tenant["required"].append("region")
    broken = breaking_changes(dump(old), dump(ops_document), label="ops-v1.yaml")
    assert broken is not None
    assert "Breaking changes found" in broken.report
    assert "response.body.scope.add" in broken.report


def test_a_new_required_parameter_is_breaking(ops_document: dict[str, Any]) -> None:
    new = copy.deepcopy(ops_document)
    new["paths"]["/ops/v1/tenants"]["get"]["parameters"].append(
        {"in": "query", "name": "region", "required": True, "schema": {"type": "string"}}
    )
    broken = breaking_changes(dump(ops_document), dump(new), label="ops-v1.yaml")
    assert broken is not None
    assert "request.body.scope.remove" in broken.report
    assert "paths./x-parameters/ops/v1/tenants.get" in broken.report


def test_a_removed_enum_value_of_a_query_parameter_is_breaking(
    ops_document: dict[str, Any],
) -> None:
    new = copy.deepcopy(ops_document)
    tenants = new["paths"]["/ops/v1/tenants"]["get"]
    status = next(p for p in tenants["parameters"] if p["name"] == "status")
    status["schema"]["enum"].remove("archived")
    broken = breaking_changes(dump(ops_document), dump(new), label="ops-v1.yaml")
    assert broken is not None
    assert "request.body.scope.remove" in broken.report


def onboarding_field(document: dict[str, Any], name: str) -> dict[str, Any]:
    field: dict[str, Any] = document["components"]["schemas"]["OnboardingInput"]["properties"][name]
    return field


def test_check_fails_when_a_pattern_is_narrowed(
    tmp_path: Path, ops_document: dict[str, Any]
) -> None:
    """The committed document took hyphens in a slug; code that refuses them breaks its clients.
    openapi-diff alone does not read `pattern`: the projection (contract.for_diff) makes it."""
    write(tmp_path)
    old = copy.deepcopy(ops_document)
    onboarding_field(old, "slug")["pattern"] = "^[a-z][a-z0-9_-]{1,39}$"
    (tmp_path / "ops-v1.yaml").write_text(dump(old))
    problems = check(tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith("ops-v1.yaml: breaking change within API version")
    assert "request.body.scope.remove" in problems[0]
    assert "paths./ops/v1/tenants.post.requestBody" in problems[0]
    assert "pattern:^[a-z][a-z0-9_-]{1,39}$" in problems[0]


@pytest.mark.parametrize(
    ("rule", "value"), [("format", "email"), ("maxLength", 100)], ids=["format", "maxLength"]
)
def test_a_new_format_or_a_shorter_maxlength_in_a_request_is_breaking(
    ops_document: dict[str, Any], rule: str, value: Any
) -> None:
    new = copy.deepcopy(ops_document)
    onboarding_field(new, "name")[rule] = value
    broken = breaking_changes(dump(ops_document), dump(new), label="ops-v1.yaml")
    assert broken is not None
    assert "request.body.scope.remove" in broken.report


def test_a_removed_pattern_in_a_request_is_additive(ops_document: dict[str, Any]) -> None:
    new = copy.deepcopy(ops_document)
    del onboarding_field(new, "slug")["pattern"]
    assert breaking_changes(dump(ops_document), dump(new), label="ops-v1.yaml") is None


def test_a_new_operation_is_additive(ops_document: dict[str, Any]) -> None:
    old = copy.deepcopy(ops_document)
    del old["paths"]["/ops/v1/tenants/{slug}/retry"]
    assert breaking_changes(dump(old), dump(ops_document), label="ops-v1.yaml") is None


def test_check_fails_on_a_breaking_change_and_on_a_stale_copy(
    tmp_path: Path, ops_document: dict[str, Any]
) -> None:
    write(tmp_path)
    old = copy.deepcopy(ops_document)
    runs = old["paths"]["/ops/v1/migration-runs/{run_id}"]["get"]
    runs["responses"]["410"] = copy.deepcopy(runs["responses"]["200"])
    (tmp_path / "ops-v1.yaml").write_text(dump(old))
    problems = check(tmp_path)
    assert len(problems) == 2, problems
    assert problems[0].startswith("ops-v1.yaml: breaking change within API version")
    assert "response.status-code.remove" in problems[0]
    assert problems[1] == "ops-v1.yaml is stale: run `manage.py api_contract --write`."


def test_a_new_api_version_keeps_the_previous_document(
    tmp_path: Path, ops_document: dict[str, Any]
) -> None:
    write(tmp_path)
    previous = copy.deepcopy(ops_document)
    previous["info"]["version"] = "2026-01-01"
    del previous["components"]["schemas"]["Tenant"]["properties"]["url"]  # unlike the new one
    (tmp_path / "ops-v1.yaml").write_text(dump(previous))
    assert "kept ops-2026-01-01.yaml (the document of version 2026-01-01)" in write(tmp_path)
    assert yaml.safe_load((tmp_path / "ops-2026-01-01.yaml").read_text()) == previous
    assert check(tmp_path) == []


def responses_of(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(`METHOD path status`, response) for every response of every operation."""
    return [
        (f"{method.upper()} {path} {status}", response)
        for path, methods in document["paths"].items()
        for method, operation in methods.items()
        if isinstance(operation, dict) and "responses" in operation
        for status, response in operation["responses"].items()
    ]


def without_every_version_headers(document: dict[str, Any]) -> dict[str, Any]:
    """The document as a version kept before the headers were declared would be."""
    old = copy.deepcopy(document)
    names = {header.name for header in EVERY_VERSION_HEADERS}
    for _, response in responses_of(old):
        headers = {k: v for k, v in response.get("headers", {}).items() if k not in names}
        response.pop("headers", None)
        if headers:
            response["headers"] = headers
    for name in names:
        del old["components"]["headers"][name]
    return old


@pytest.mark.parametrize("name", sorted(path.name for path in CONTRACT_DIR.glob("*.yaml")), ids=str)
def test_every_committed_document_declares_the_request_id_on_every_response(name: str) -> None:
    """Every version's responses carry X-Request-ID (the observation layer sets it whatever the
    version): the kept documents of earlier versions say so too."""
    document = yaml.safe_load((CONTRACT_DIR / name).read_text())
    responses = responses_of(document)
    assert len(responses) > 50
    without = [where for where, r in responses if "X-Request-ID" not in r.get("headers", {})]
    assert without == []
    assert {r["headers"]["X-Request-ID"]["$ref"] for _, r in responses} == {
        "#/components/headers/X-Request-ID"
    }
    declared = document["components"]["headers"]["X-Request-ID"]
    assert declared["schema"] == {"type": "string", "pattern": REQUEST_ID_PATTERN}
    assert declared["required"] is True


def test_a_kept_document_without_the_request_id_fails_check_until_write_adds_it(
    tmp_path: Path, ops_document: dict[str, Any]
) -> None:
    write(tmp_path)
    kept = without_every_version_headers(ops_document)
    kept["info"]["version"] = "2026-01-01"
    (tmp_path / "ops-2026-01-01.yaml").write_text(dump(kept))
    assert check(tmp_path) == [
        "ops-2026-01-01.yaml lacks a header every version sends (X-Request-ID): run "
        "`manage.py api_contract --write`."
    ]
    assert write(tmp_path) == ["added X-Request-ID to ops-2026-01-01.yaml"]
    completed = yaml.safe_load((tmp_path / "ops-2026-01-01.yaml").read_text())
    assert completed == {**ops_document, "info": kept["info"]}
    assert check(tmp_path) == []
    assert write(tmp_path) == []


def test_the_diff_tool_is_installed_at_its_pinned_version() -> None:
    package = OPENAPI_DIFF.parent.parent / "openapi-diff" / "package.json"
    assert '"version": "0.24.1"' in package.read_text()

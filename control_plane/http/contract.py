"""The committed API contract: openapi/tenant-v1.yaml, openapi/ops-v1.yaml, openapi/CHANGELOG.md.

`write` regenerates them; `check` fails when a committed copy is stale, or when the regenerated
document breaks the committed one (a removed operation, field, enum value or response, a narrowed
type, a new required parameter), as judged by Atlassian's openapi-diff (npm, installed by
platform/dev.sh). A breaking change ships only as a new API version: when the newest version in
taskflow.api_versions is not the one a committed document was made at, `write` keeps that
document as openapi/<name>-<its version>.yaml and the new one is compared against nothing.

A kept document is frozen but for the headers every version's responses carry whoever answers
them (taskflow.openapi.EVERY_VERSION_HEADERS, the request id): the platform sends them at every
version, so `write` adds them to every kept document (as the newest document declares them) and
`check` fails on a kept document without them.

It reads and writes files and runs the diff tool; it never changes what the API serves.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from django.conf import settings
from drf_spectacular.generators import SchemaGenerator
from drf_spectacular.renderers import OpenApiYamlRenderer
from drf_spectacular.settings import patched_settings

from control_plane.http import ops_changes
from taskflow.api_versions import CATALOG
from taskflow.openapi import EVERY_VERSION_HEADERS, SCHEMA_SETTINGS

CONTRACT_DIR = Path(settings.BASE_DIR) / "openapi"
OPENAPI_DIFF = (
    Path(settings.BASE_DIR) / ".data" / "tools" / "node_modules" / ".bin" / "openapi-diff"
)
CHANGELOG = "CHANGELOG.md"


@dataclass(frozen=True)
class Document:
    """One API's committed description: where it lives and how it is generated."""

    name: str  # "tenant", "ops"
    urlconf: str
    settings: Mapping[str, Any]

    @property
    def file_name(self) -> str:
        return f"{self.name}-v1.yaml"

    def kept(self, directory: Path) -> list[Path]:
        """The documents of its earlier versions (`<name>-<version>.yaml`), oldest first."""
        return sorted(
            path for path in directory.glob(f"{self.name}-*.yaml") if path.name != self.file_name
        )


OPS_SCHEMA_SETTINGS = {
    "TITLE": "TaskFlow operator API",
    "DESCRIPTION": "The operator API of the public host: onboard and manage tenants, run "
    "migration fan-outs. Staff only.",
    "VERSION": CATALOG.latest.name,
}
DOCUMENTS = (
    Document("tenant", "control_plane.urls_tenant", SCHEMA_SETTINGS),
    Document("ops", "control_plane.urls_public", OPS_SCHEMA_SETTINGS),
)


def generate(document: Document) -> str:
    """The document as YAML, generated from the views."""
    with patched_settings(dict(document.settings)):
        schema = SchemaGenerator(urlconf=document.urlconf).get_schema(request=None, public=True)
        rendered: bytes = OpenApiYamlRenderer().render(schema, renderer_context={})
    return rendered.decode()


def with_every_version_headers(text: str, newest: str) -> str:
    """`text` (a document) with EVERY_VERSION_HEADERS on every response of every operation,
    declared under components/headers as `newest` (the current document) declares them.

    A response that already names one keeps its own; nothing else changes, so a document that
    has them all comes back byte for byte (drf-spectacular's renderer wrote it).
    """
    names = [header.name for header in EVERY_VERSION_HEADERS]
    declared = (yaml.safe_load(newest) or {}).get("components", {}).get("headers", {})
    document = yaml.safe_load(text) or {}
    added = False
    for methods in document.get("paths", {}).values():
        for operation in methods.values():
            if not isinstance(operation, dict):
                continue
            for response in operation.get("responses", {}).values():
                headers = response.get("headers", {})
                missing = [name for name in names if name not in headers]
                if not missing:
                    continue
                refs = {name: {"$ref": f"#/components/headers/{name}"} for name in missing}
                # First, where the generator puts them (before content and description).
                rest = {key: value for key, value in response.items() if key != "headers"}
                response.clear()
                response.update(headers=refs | headers, **rest)
                added = True
    components = document.setdefault("components", {})
    headers = components.get("headers", {})
    if added or any(name not in headers for name in names):
        for name in names:
            headers.setdefault(name, declared[name])
        components["headers"] = dict(sorted(headers.items()))
        added = True
    if not added:
        return text
    rendered: bytes = OpenApiYamlRenderer().render(document, renderer_context={})
    return rendered.decode()


def changelog() -> str:
    """The tenant API's versions, then the operator API's dated changes."""
    return CATALOG.changelog() + "\n" + ops_changes.changelog()


def version_of(text: str) -> str:
    """The API version a document was generated at (its info.version)."""
    return str((yaml.safe_load(text) or {}).get("info", {}).get("version", ""))


@dataclass(frozen=True)
class Breaking:
    """openapi-diff's verdict when a regenerated document breaks the committed one."""

    document: str
    report: str


def breaking_changes(
    old: str, new: str, *, label: str, tool: Path = OPENAPI_DIFF
) -> Breaking | None:
    """Compare two documents with openapi-diff; its report when `new` breaks a client of `old`."""
    if not tool.exists():
        raise FileNotFoundError(
            f"{tool} is missing: platform/dev.sh installs openapi-diff (npm) into .data/tools."
        )
    with _files(for_diff(old), for_diff(new)) as (old_path, new_path):
        result = subprocess.run(
            [str(tool), str(old_path), str(new_path)],
            capture_output=True, text=True, timeout=600,
            env=os.environ | {"NO_COLOR": "1"},
        )  # fmt: skip
    if result.returncode == 0:
        return None
    return Breaking(document=label, report=(result.stdout + result.stderr).strip())


PARAMETERS_PREFIX = "/x-parameters"


def for_diff(text: str) -> str:
    """The document as openapi-diff should judge it, parameters included.

    openapi-diff 0.24.1 compares operations, status codes, response headers and JSON bodies, not
    parameters, and its JSON-schema diff ignores `enum`, `pattern` and `format` (it does judge
    `minLength`/`maxLength`). So each operation's parameters are also presented to it as the JSON
    body of a mirror operation under /x-parameters (one property per `in.name`, the required ones
    required, nothing else accepted), every enum as an object with exactly one of its values as a
    property name, and every string's pattern and format as an object branch beside it (see
    _string_rules_as_objects): the tool then judges a removed parameter, a new required one, a
    narrowed type, length, pattern or format and a removed enum value (in a request; the reverse
    in a response) like any other narrowed body. Both documents go through the same projection.
    """
    document = _string_rules_as_objects(_enums_as_objects(yaml.safe_load(text)))
    mirrors: dict[str, Any] = {}
    for path, methods in document.get("paths", {}).items():
        for method, operation in methods.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            parameters = [*methods.get("parameters", []), *operation.get("parameters", [])]
            body = {
                "type": "object",
                "properties": {f"{p['in']}.{p['name']}": p.get("schema", {}) for p in parameters},
                "required": [f"{p['in']}.{p['name']}" for p in parameters if p.get("required")],
                "additionalProperties": False,
            }
            if not body["required"]:
                del body["required"]
            mirrors.setdefault(PARAMETERS_PREFIX + path, {})[method] = {
                "requestBody": {"content": {"application/json": {"schema": body}}},
                "responses": {"200": {"description": "parameters"}},
            }
    document["paths"] = {**document.get("paths", {}), **mirrors}
    return yaml.safe_dump(document, sort_keys=False)


def _enums_as_objects(node: Any) -> Any:
    if isinstance(node, list):
        return [_enums_as_objects(item) for item in node]
    if not isinstance(node, dict):
        return node
    if isinstance(node.get("enum"), list):
        return {
            "type": "object",
            "properties": {str(value): {} for value in node["enum"]},
            "additionalProperties": False,
            "minProperties": 1,
            "maxProperties": 1,
        }
    return {key: _enums_as_objects(value) for key, value in node.items()}


STRING_RULES = ("pattern", "format")


def _string_rules_as_objects(node: Any) -> Any:
    """Every string schema as `anyOf: [the string without pattern/format, a marker object]`.

    The tool cannot compare two regular expressions or formats; it can compare objects. A string
    with no rule gets any object as its marker (every rule allowed); one with rules gets exactly
    the object whose only properties are its rules, named `pattern:<regex>` / `format:<name>`.
    So adding a rule narrows the set, removing one widens it, and changing one does both (two
    different rules are judged incomparable: a changed pattern is breaking in a request, as it
    may refuse what the old one took). The string branch is the same on both sides, so the
    tool's own judgement of type and lengths is untouched.
    """
    if isinstance(node, list):
        return [_string_rules_as_objects(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: _string_rules_as_objects(value) for key, value in node.items()}
    if node.get("type") != "string":
        return node
    rules: dict[str, Any] = {f"{name}:{node[name]}": {} for name in STRING_RULES if name in node}
    marker: dict[str, Any] = {"type": "object"}
    if rules:
        marker.update(properties=rules, required=sorted(rules), additionalProperties=False)
    string = {key: value for key, value in node.items() if key not in STRING_RULES}
    return {"anyOf": [string, marker]}


@contextmanager
def _files(*texts: str) -> Iterator[list[Path]]:
    with tempfile.TemporaryDirectory(prefix="api-contract-") as folder:
        paths = []
        for index, text in enumerate(texts):
            path = Path(folder) / f"{index}.yaml"
            path.write_text(text)
            paths.append(path)
        yield paths


def write(directory: Path = CONTRACT_DIR) -> list[str]:
    """Regenerate every document and the changelog, and give every kept document the headers
    every version sends; returns what changed."""
    directory.mkdir(exist_ok=True)
    changed = []
    for document in DOCUMENTS:
        path = directory / document.file_name
        new = generate(document)
        old = path.read_text() if path.exists() else None
        if old is not None:
            old_version = version_of(old)
            if old_version and old_version != version_of(new):
                kept = directory / f"{document.name}-{old_version}.yaml"
                kept.write_text(old)
                changed.append(f"kept {kept.name} (the document of version {old_version})")
        if old != new:
            path.write_text(new)
            changed.append(f"wrote {path.name}")
        for kept in document.kept(directory):
            text = kept.read_text()
            completed = with_every_version_headers(text, new)
            if completed != text:
                kept.write_text(completed)
                changed.append(f"added {_every_version_header_names()} to {kept.name}")
    log = directory / CHANGELOG
    if not log.exists() or log.read_text() != changelog():
        log.write_text(changelog())
        changed.append(f"wrote {CHANGELOG}")
    return changed


def _every_version_header_names() -> str:
    return ", ".join(header.name for header in EVERY_VERSION_HEADERS)


def check(directory: Path = CONTRACT_DIR, *, tool: Path = OPENAPI_DIFF) -> list[str]:
    """Every reason the committed contract is not the one the code serves (empty: it is)."""
    problems = []
    for document in DOCUMENTS:
        new = generate(document)
        problems += _newest_problems(directory / document.file_name, new, tool)
        for kept in document.kept(directory):
            text = kept.read_text()
            if with_every_version_headers(text, new) != text:
                problems.append(
                    f"{kept.name} lacks a header every version sends "
                    f"({_every_version_header_names()}): run `manage.py api_contract --write`."
                )
    log = directory / CHANGELOG
    if not log.exists() or log.read_text() != changelog():
        problems.append(f"{CHANGELOG} is stale: run `manage.py api_contract --write`.")
    return problems


def _newest_problems(path: Path, new: str, tool: Path) -> list[str]:
    """Why the committed newest document at `path` is not `new` (empty: it is)."""
    if not path.exists():
        return [f"{path.name} is missing: run `manage.py api_contract --write`."]
    old = path.read_text()
    if old == new:
        return []
    problems = []
    if version_of(old) == version_of(new):
        broken = breaking_changes(old, new, label=path.name, tool=tool)
        if broken is not None:
            problems.append(
                f"{path.name}: breaking change within API version {version_of(new)}; ship "
                f"it as a new version (taskflow.api_versions) or make it additive.\n"
                f"{broken.report}"
            )
    problems.append(f"{path.name} is stale: run `manage.py api_contract --write`.")
    return problems

"""The columns an import file may have, and the check of its header row.

Used twice: by the upload (so a wrong header is a 400 before any job exists) and by the pipeline
(so a file placed on disk by other means is held to the same rule).
"""

from __future__ import annotations

from collections.abc import Sequence

from tenants.problems import Problem

COLUMNS: tuple[str, ...] = (
    "external_id",
    "project",
    "title",
    "description",
    "status",
    "priority",
    "assignee",
    "due_date",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("project", "title")
MAX_HEADER_BYTES = 64 * 1024


class InvalidHeader(Problem):
    """The header row is missing, names unknown columns, misses required ones or repeats one."""

    status = 400
    title = "Invalid CSV header"

    def __init__(
        self,
        detail: str,
        *,
        unknown: Sequence[str] = (),
        missing: Sequence[str] = (),
        duplicated: Sequence[str] = (),
    ) -> None:
        super().__init__(
            detail,
            unknown_columns=list(unknown),
            missing_columns=list(missing),
            duplicated_columns=list(duplicated),
            allowed_columns=list(COLUMNS),
        )


def normalise(name: str) -> str:
    return name.strip().lstrip("\ufeff").strip().lower()


def check_header(names: Sequence[str]) -> tuple[str, ...]:
    """The header's column names, normalised, or InvalidHeader naming every problem at once."""
    columns = tuple(normalise(n) for n in names)
    if not any(columns):
        raise InvalidHeader(
            "A header row is required: " + ", ".join(COLUMNS) + ".", missing=REQUIRED_COLUMNS
        )
    unknown = [c for c in dict.fromkeys(columns) if c not in COLUMNS]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    duplicated = [c for c in dict.fromkeys(columns) if columns.count(c) > 1]
    if unknown or missing or duplicated:
        parts = []
        if unknown:
            parts.append("unknown columns: " + ", ".join(c or "(blank)" for c in unknown))
        if missing:
            parts.append("missing required columns: " + ", ".join(missing))
        if duplicated:
            parts.append("repeated columns: " + ", ".join(duplicated))
        raise InvalidHeader(
            "The header row is invalid (" + "; ".join(parts) + ").",
            unknown=unknown,
            missing=missing,
            duplicated=duplicated,
        )
    return columns

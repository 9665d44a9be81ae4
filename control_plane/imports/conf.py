"""Settings of bulk imports, each with a default, so the feature needs no edit of settings.py.

Read from Django settings first, then the environment (so a worker started with a variable gets
it), then the default.
"""

from __future__ import annotations

import os
from pathlib import Path

from django.conf import settings

DEFAULT_MAX_UPLOAD_BYTES = 2 * 1024**3  # 2 GiB: about 20 million rows of a typical file
DEFAULT_MAX_ATTEMPTS = 3
DEFAULT_PROGRESS_EVERY = 50_000
DEFAULT_WRITE_BATCH_ROWS = 50_000
DEFAULT_FILE_RETENTION_DAYS = 7


def _setting(name: str) -> str | None:
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name)
    return None if value is None or value == "" else str(value)


def upload_dir() -> Path:
    """Where uploads and error reports live; web and workers must share it."""
    value = _setting("IMPORT_UPLOAD_DIR")
    return Path(value) if value else Path(settings.BASE_DIR) / ".data" / "imports"


def max_upload_bytes() -> int:
    return int(_setting("IMPORT_MAX_UPLOAD_BYTES") or DEFAULT_MAX_UPLOAD_BYTES)


def max_attempts() -> int:
    """Attempts of one job (a worker lost, a database connection lost) before it fails."""
    return int(_setting("IMPORT_MAX_ATTEMPTS") or DEFAULT_MAX_ATTEMPTS)


def progress_every() -> int:
    """Rows between two progress updates (and cancel checks) while the file is read."""
    return int(_setting("IMPORT_PROGRESS_EVERY") or DEFAULT_PROGRESS_EVERY)


def write_batch_rows() -> int:
    """Staged rows written per statement: the write's progress moves once per batch."""
    return int(_setting("IMPORT_WRITE_BATCH_ROWS") or DEFAULT_WRITE_BATCH_ROWS)


def file_retention_days() -> int:
    """Days a finished job keeps its upload and error report on disk before beat deletes them."""
    return int(_setting("IMPORT_FILE_RETENTION_DAYS") or DEFAULT_FILE_RETENTION_DAYS)

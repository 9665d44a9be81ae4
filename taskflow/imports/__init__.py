"""Bulk import of tasks from CSV, and export back to CSV, through PostgreSQL COPY.

Pure TaskFlow: every function takes a session already bound to one tenant (tenants.binding) and
the schema name from that binding; nothing here knows about jobs, uploads or workers. The caller
owns the transaction: an import writes nothing until the caller commits, so a failed, cancelled
or interrupted import leaves nothing behind.
"""

from taskflow.imports.columns import COLUMNS, REQUIRED_COLUMNS, InvalidHeader, check_header
from taskflow.imports.export import export_tasks
from taskflow.imports.pipeline import (
    ImportCancelled,
    ImportMode,
    ImportOutcome,
    ImportProgress,
    ImportRejected,
    run_import,
)

__all__ = [
    "COLUMNS",
    "REQUIRED_COLUMNS",
    "ImportCancelled",
    "ImportMode",
    "ImportOutcome",
    "ImportProgress",
    "ImportRejected",
    "InvalidHeader",
    "check_header",
    "export_tasks",
    "run_import",
]

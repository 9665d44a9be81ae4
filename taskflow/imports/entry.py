"""What code outside taskflow may use of imports and exports: the only module it imports here.

The job records, uploads and workers (control_plane.imports) run the pipeline, stream the export,
check an upload's header as it arrives and serve the error report through these names; the
modules behind them may change without their callers noticing. import-linter holds them to it.
"""

from taskflow.imports.columns import MAX_HEADER_BYTES, InvalidHeader
from taskflow.imports.errors_report import HEADER as ERRORS_HEADER
from taskflow.imports.export import export_tasks
from taskflow.imports.pipeline import (
    ImportCancelled,
    ImportMode,
    ImportOutcome,
    ImportProgress,
    ImportRejected,
    run_import,
)
from taskflow.imports.reading import header_of

__all__ = [
    "ERRORS_HEADER",
    "MAX_HEADER_BYTES",
    "ImportCancelled",
    "ImportMode",
    "ImportOutcome",
    "ImportProgress",
    "ImportRejected",
    "InvalidHeader",
    "export_tasks",
    "header_of",
    "run_import",
]

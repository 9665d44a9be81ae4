"""Bulk import of tasks from CSV, and export back to CSV, through PostgreSQL COPY.

Pure TaskFlow: every function takes a session already bound to one tenant (tenants.binding) and
the schema name from that binding; nothing here knows about jobs, uploads or workers. The caller
owns the transaction: an import writes nothing until the caller commits, so a failed, cancelled
or interrupted import leaves nothing behind. Callers outside taskflow use `taskflow.imports.entry`
alone.
"""

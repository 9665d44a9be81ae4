"""Migration fan-out: every tenant schema migrated by Celery workers (runs, canaries, budgets)."""

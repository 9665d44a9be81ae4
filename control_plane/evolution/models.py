"""Evolutions (public schema): a change of shape that running code depends on, in four phases.

An Evolution is one row per catalogued change (control_plane.evolution.catalog); `completed`
is the last phase it finished. Each phase (and each rollback) runs as one or more fan-outs
(control_plane.fanout MigrationRun rows) over the template, the shared schema and every tenant
schema, recorded as EvolutionRun rows in order: the newest one is what the evolution is doing.
Progress per tenant is the fan-out's own (TenantMigration), never copied here.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.db import models

from control_plane.fanout.models import MigrationRun


class Phase(models.TextChoices):
    EXPAND = "expand", "Expand"
    BACKFILL = "backfill", "Backfill"
    SWITCH = "switch", "Switch"
    CONTRACT = "contract", "Contract"


PHASE_ORDER = (Phase.EXPAND, Phase.BACKFILL, Phase.SWITCH, Phase.CONTRACT)


class Action(models.TextChoices):
    APPLY = "apply", "Apply"
    ROLLBACK = "rollback", "Roll back"


class Evolution(models.Model):
    name: models.CharField[str, str] = models.CharField(max_length=100, unique=True)
    # The last phase finished; "" before the expand (or after the expand was rolled back).
    completed: models.CharField[str, str] = models.CharField(
        max_length=12, choices=Phase.choices, blank=True, default=""
    )
    # Fan-out strategy of the phases: concurrency, batch_size, batch_rows, throttle_ms, timeouts.
    options: models.JSONField[dict[str, Any], dict[str, Any]] = models.JSONField(
        default=dict, blank=True
    )
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now_add=True)
    updated_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ("name",)

    def __str__(self) -> str:
        return self.name


class EvolutionRun(models.Model):
    """One fan-out of an evolution's phase (the contract has two: indexes, then the column)."""

    evolution: models.ForeignKey[Evolution, Evolution] = models.ForeignKey(
        Evolution, on_delete=models.CASCADE, related_name="runs"
    )
    phase: models.CharField[str, str] = models.CharField(max_length=12, choices=Phase.choices)
    action: models.CharField[str, str] = models.CharField(
        max_length=12, choices=Action.choices, default=Action.APPLY
    )
    step: models.PositiveSmallIntegerField[int, int] = models.PositiveSmallIntegerField(default=0)
    run: models.ForeignKey[MigrationRun, MigrationRun] = models.ForeignKey(
        MigrationRun, on_delete=models.PROTECT, related_name="+"
    )
    # Its success has been acted on (the phase recorded, the next step started): exactly once.
    settled: models.BooleanField[bool, bool] = models.BooleanField(default=False)
    override: models.BooleanField[bool, bool] = models.BooleanField(
        default=False, help_text="Started past a closed gate, confirmed by an operator."
    )
    created_at: models.DateTimeField[datetime, datetime] = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("id",)

    def __str__(self) -> str:
        return f"{self.evolution} {self.action} {self.phase}.{self.step} (run {self.run_id})"

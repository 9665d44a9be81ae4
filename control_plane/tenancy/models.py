"""Onboarding records of the public schema: an operator's request to add a tenant.

They belong to the app label "control_plane" (control_plane/models.py imports them), which keeps
their table and migrations where they were.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models

from tenants.models import Tenant


class OnboardingStatus(models.TextChoices):
    PENDING = "pending", "Pending"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class Onboarding(models.Model):
    """An operator's request to onboard one tenant, kept until it succeeds (and after, as a record).

    Identity rows (domain, owner, membership, token) are made only when provisioning succeeds,
    all in one transaction, so a failure leaves none of them behind.
    """

    tenant: models.OneToOneField[Tenant, Tenant] = models.OneToOneField(
        Tenant, on_delete=models.CASCADE, related_name="onboarding"
    )
    domain = models.CharField(max_length=253, unique=True)
    owner_email = models.EmailField()
    token_prefix = models.CharField(max_length=16)
    token_digest = models.CharField(max_length=64)
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    status = models.CharField(
        max_length=10, choices=OnboardingStatus.choices, default=OnboardingStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, default="")
    requested_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    provisioning_ms = models.FloatField(null=True, blank=True)

    class Meta:
        app_label = "control_plane"

    def __str__(self) -> str:
        return f"onboarding of {self.tenant}"


class MoveStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    COPYING = "copying", "Copying"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


MOVE_ACTIVE_STATUSES = (MoveStatus.QUEUED, MoveStatus.COPYING)


class TenantMove(models.Model):
    """One requested move of a tenant between placements, from the request to its outcome.

    A worker claims a queued move by changing its status conditionally (queued -> copying), so a
    message delivered twice runs the move once; a refused move is recorded failed with the reason.
    """

    tenant: models.ForeignKey[Tenant, Tenant] = models.ForeignKey(
        Tenant, on_delete=models.CASCADE, related_name="moves"
    )
    source = models.CharField(max_length=10)
    target = models.CharField(max_length=10)
    status = models.CharField(
        max_length=10, choices=MoveStatus.choices, default=MoveStatus.QUEUED, db_index=True
    )
    error = models.TextField(blank=True, default="")
    rows = models.JSONField(default=dict, blank=True)
    seconds = models.FloatField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=200, blank=True, default="")
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    requested_via = models.CharField(max_length=10, default="admin")
    requested_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        app_label = "control_plane"
        ordering = ("-requested_at", "-id")
        constraints = [
            models.UniqueConstraint(
                fields=["tenant"],
                condition=models.Q(status__in=["queued", "copying"]),
                name="one_active_move_per_tenant",
            )
        ]

    def __str__(self) -> str:
        return f"move {self.pk} of {self.tenant_id} to {self.target} ({self.status})"

    @property
    def is_finished(self) -> bool:
        return self.status not in MOVE_ACTIVE_STATUSES

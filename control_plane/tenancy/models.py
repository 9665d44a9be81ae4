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

"""The models of the app label "control_plane", defined in their domains' packages.

Django finds an app's models through its models module, so this one imports them; code imports
them from their domain (control_plane.identity.models, control_plane.tenancy.models).
"""

from control_plane.identity.models import ApiToken, Membership
from control_plane.tenancy.models import (
    MoveStatus,
    Onboarding,
    OnboardingStatus,
    TenantMove,
)

__all__ = [
    "ApiToken",
    "Membership",
    "MoveStatus",
    "Onboarding",
    "OnboardingStatus",
    "TenantMove",
]

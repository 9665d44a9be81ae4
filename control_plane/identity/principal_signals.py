"""Keep the principal cache true: forget the tokens whose authentication a saved or deleted row
changes (the token itself, its user, the user's membership, the tenant).

Changes made with QuerySet.update() send no signal: code that revokes or changes these rows in
bulk calls control_plane.identity.principals.forget_principals itself (the admin's revoke action does).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from control_plane.identity.models import ApiToken, Membership
from control_plane.identity.principals import forget_principals
from tenants.models import Tenant


@receiver(post_save, sender=ApiToken)
@receiver(post_delete, sender=ApiToken)
def token_changed(sender: type[ApiToken], instance: ApiToken, **kwargs: Any) -> None:
    if not kwargs.get("created"):
        forget_principals([instance.digest])


@receiver(post_save, sender=User)
@receiver(post_delete, sender=User)
def user_changed(sender: type[User], instance: User, **kwargs: Any) -> None:
    if not kwargs.get("created"):
        forget_principals(
            ApiToken.objects.filter(user_id=instance.pk).values_list("digest", flat=True)
        )


@receiver(post_save, sender=Membership)
@receiver(post_delete, sender=Membership)
def membership_changed(sender: type[Membership], instance: Membership, **kwargs: Any) -> None:
    tokens = ApiToken.objects.filter(user_id=instance.user_id, tenant_id=instance.tenant_id)
    forget_principals(tokens.values_list("digest", flat=True))


@receiver(post_save, sender=Tenant)
@receiver(post_delete, sender=Tenant)
def tenant_changed(sender: type[Tenant], instance: Tenant, **kwargs: Any) -> None:
    if not kwargs.get("created"):
        tokens = ApiToken.objects.filter(tenant_id=instance.pk)
        forget_principals(tokens.values_list("digest", flat=True))


__all__ = ["membership_changed", "tenant_changed", "token_changed", "user_changed"]

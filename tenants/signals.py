"""Keep the tenant-resolution cache true: any saved or deleted Tenant or Domain is forgotten."""

from __future__ import annotations

from typing import Any

from django.db.models.signals import post_delete, post_save, pre_save
from django.dispatch import receiver

from tenants.models import Domain, Tenant
from tenants.resolution import forget_hosts


@receiver(post_save, sender=Tenant)
@receiver(post_delete, sender=Tenant)
def tenant_changed(sender: type[Tenant], instance: Tenant, **kwargs: Any) -> None:
    if kwargs.get("created"):
        return  # a tenant inserted just now has no domains yet, so no host of it is cached
    hosts = list(Domain.objects.filter(tenant_id=instance.pk).values_list("domain", flat=True))
    forget_hosts(*hosts)  # now, and settled once this transaction commits


@receiver(pre_save, sender=Domain)
def domain_renamed(sender: type[Domain], instance: Domain, **kwargs: Any) -> None:
    if instance.pk:
        old = Domain.objects.filter(pk=instance.pk).values_list("domain", flat=True).first()
        if old and old != instance.domain:
            forget_hosts(old)


@receiver(post_save, sender=Domain)
@receiver(post_delete, sender=Domain)
def domain_changed(sender: type[Domain], instance: Domain, **kwargs: Any) -> None:
    if kwargs.get("created"):
        return  # resolution caches no misses, so a new host has nothing to forget
    forget_hosts(instance.domain)


__all__ = ["domain_changed", "domain_renamed", "tenant_changed"]

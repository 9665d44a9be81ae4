"""Bring the database to a runnable platform: public migrations, grants, public tenant, demo."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandParser

from tenants.models import Domain, Isolation, Tenant, TenantStatus, schema_name_for
from tenants.provisioning import grant_schema_to_app_role, provision_storage
from tenants.roles import use_owner_role_for_django


class Command(BaseCommand):
    help = (
        "Migrate the public schema as the owner role, grant the app role, ensure the public tenant."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--demo", action="store_true", help="Also ensure the demo tenant and admin."
        )
        parser.add_argument("--admin-password", default="", help="Password of the demo admin user.")

    def handle(self, *args: Any, **options: Any) -> None:
        use_owner_role_for_django()
        call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
        grant_schema_to_app_role("public")
        ensure_public_tenant()
        self.stdout.write(
            f"public schema migrated; control plane at http://{settings.PUBLIC_DOMAIN}:8000"
        )
        if options["demo"]:
            self.ensure_demo(options["admin_password"])

    def ensure_demo(self, admin_password: str) -> None:
        user_model = get_user_model()
        admin, _ = user_model.objects.get_or_create(
            username="admin",
            defaults={"email": "admin@example.com", "is_staff": True, "is_superuser": True},
        )
        if admin_password:
            admin.set_password(admin_password)
            admin.save()
        tenant = Tenant.objects.filter(slug="demo").first()
        if tenant is None:
            tenant = Tenant.objects.create(
                name="Demo",
                slug="demo",
                schema_name=schema_name_for("demo"),
                isolation=Isolation.SCHEMA,
            )
            Domain.objects.create(
                domain=f"demo.{settings.PUBLIC_DOMAIN}", tenant=tenant, is_primary=True
            )
        if tenant.status != TenantStatus.ACTIVE:
            provision_storage(tenant)
            tenant.status = TenantStatus.ACTIVE
            tenant.save(update_fields=["status", "updated_at"])
        self.stdout.write(f"demo tenant at http://demo.{settings.PUBLIC_DOMAIN}:8000")
        if admin_password:
            self.stdout.write(
                f"admin login: http://{settings.PUBLIC_DOMAIN}:8000/admin/  user admin  password {admin_password}"
            )


def ensure_public_tenant() -> Tenant:
    """The row django-tenants routes the public host to; idempotent."""
    tenant, _ = Tenant.objects.get_or_create(
        schema_name="public",
        defaults={"name": "Control plane", "slug": "public", "status": TenantStatus.ACTIVE},
    )
    Domain.objects.get_or_create(
        domain=settings.PUBLIC_DOMAIN, defaults={"tenant": tenant, "is_primary": True}
    )
    return tenant

"""Bring the database to a runnable platform: public migrations, grants, template, demo tenant."""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import QuerySet
from sqlalchemy import text

from control_plane.identity.models import ApiToken
from control_plane.identity.tokens import new_token_secret
from control_plane.tenancy.models import Onboarding, OnboardingStatus
from control_plane.tenancy.onboarding import (
    OnboardingInput,
    provision_onboarding,
    request_onboarding,
    validate_onboarding,
)
from migrations_sqla import scripts
from migrations_sqla.migrator import SchemaMigrator, Target, owner_engine, platform_schemas
from migrations_sqla.public_schema import remove_taskflow_tables_from_public
from tenants.citus import is_citus
from tenants.cloning import TEMPLATE_SCHEMA, read_revisions
from tenants.database_roles import app_role_name, owner_connection, use_owner_role_for_django
from tenants.distribution import distribute_shared_tables
from tenants.models import Domain, Isolation, Tenant, TenantStatus
from tenants.placement import SHARED_SCHEMA
from tenants.provisioning import ensure_shared_schema, grant_schema_to_app_role
from tenants.spares import refill_spares

DEMO_SLUG = "demo"


class Command(BaseCommand):
    help = "Migrate the public and template schemas as the owner role and ensure the public tenant."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--demo", action="store_true", help="Also ensure the demo tenant and admin."
        )
        parser.add_argument(
            "--admin-password",
            default=os.environ.get("DEMO_ADMIN_PASSWORD", ""),
            help="Password of the demo admin user (default: $DEMO_ADMIN_PASSWORD).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        use_owner_role_for_django()
        call_command("migrate_schemas", shared=True, interactive=False, verbosity=0)
        grant_schema_to_app_role("public")
        ensure_public_tenant()
        ensure_shared_schema()
        with owner_engine().connect() as connection:
            self.migrate_platform_schemas(connection)
            connection.execute(
                text(f'REVOKE ALL ON "{SHARED_SCHEMA}".alembic_version FROM "{app_role_name()}"')
            )
            connection.commit()
            # Before the tenants: one that fails to migrate must not keep these in public.
            with owner_connection() as conn:
                removed = remove_taskflow_tables_from_public(conn)
            if removed:
                self.stdout.write(f"TaskFlow tables removed from public: {', '.join(removed)}")
            if settings.CITUS_DISTRIBUTE_SHARED:
                self.distribute_shared_tables()
            revisions = schema_revisions(TEMPLATE_SCHEMA)
            upgraded = self.upgrade_tenant_schemas(connection, revisions)
        self.stdout.write(f"public, template and shared schemas migrated (template at {revisions})")
        spares = refill_spares()
        if spares:
            self.stdout.write(f"{spares} spare tenant schemas cloned for fast onboarding")
        if upgraded:
            self.stdout.write(f"{upgraded} tenant schemas brought to the template's revisions")
        if options["demo"]:
            self.ensure_demo(options["admin_password"])

    def migrate_platform_schemas(self, connection: Any) -> None:
        """The template (its Django tenant apps, then Alembic) and the shared schema to the
        head, through the migrator as a fan-out does; an attempt interrupted after its commit
        gets its non-transactional statements again."""
        migrator = SchemaMigrator(connection, Target(alembic=scripts.head_revision(), django=None))
        for schema in platform_schemas(migrator.connection):
            outcome = migrator.migrate(schema, attempted_before=True)
            if not outcome.ok:
                raise CommandError(f"the {schema} schema failed to migrate: {outcome.error}")

    def distribute_shared_tables(self) -> None:
        """On a Citus coordinator, the shared schema's tables distributed by tenant_id (once)."""
        with owner_connection(autocommit=True) as conn:
            if not is_citus(conn):
                return
            distributed = distribute_shared_tables(conn)
        if distributed:
            self.stdout.write(f"shared tables distributed by tenant_id: {', '.join(distributed)}")

    def upgrade_tenant_schemas(
        self, connection: Any, revisions: dict[str, str], tenants: QuerySet[Tenant] | None = None
    ) -> int:
        """Bring tenant schemas behind the template up to it, one by one through the migrator
        (small installations; large ones use the migration fan-out). `tenants`: every active
        schema-mode tenant unless given; `public` is the control plane's, never a tenant's."""
        if tenants is None:
            tenants = Tenant.objects.filter(isolation=Isolation.SCHEMA, status=TenantStatus.ACTIVE)
        behind = [t for t in tenants.exclude(schema_name="public") if t.revisions != revisions]
        migrator = SchemaMigrator(
            connection, Target(alembic=revisions.get("alembic"), django=revisions.get("django"))
        )
        failed = []
        for tenant in behind:
            outcome = migrator.migrate(tenant.schema_name, recorded=tenant.revisions)
            if outcome.ok:
                Tenant.objects.filter(pk=tenant.pk).update(revisions=outcome.after)
            else:
                failed.append(f"{tenant.schema_name}: {outcome.error}")
        if failed:
            raise CommandError("tenant schemas failed to migrate:\n" + "\n".join(failed))
        return len(behind)

    def ensure_demo(self, admin_password: str) -> None:
        user_model = get_user_model()
        admin, _ = user_model.objects.get_or_create(
            username="admin",
            defaults={"email": "admin@example.com", "is_staff": True, "is_superuser": True},
        )
        if admin_password:
            admin.set_password(admin_password)
            admin.save()
        domain = f"{DEMO_SLUG}.{settings.PUBLIC_DOMAIN}"
        key = "setup-platform-demo-tenant"
        fields = {"name": "Demo", "slug": DEMO_SLUG, "domain": domain, "isolation": "schema"}
        data = OnboardingInput(**fields, owner_email="owner@demo.example")
        if not Tenant.objects.filter(slug=DEMO_SLUG).exists():
            data = validate_onboarding(**fields, owner_email=data.owner_email)
        requested = request_onboarding(data=data, idempotency_key=key, enqueue=False)
        if requested.onboarding.status != OnboardingStatus.SUCCEEDED:
            provision_onboarding(requested.onboarding.pk)
        token = requested.token or demo_owner_token(requested.onboarding)
        self.stdout.write(
            f"demo tenant: http://{domain}:{settings.WEB_PORT}/  owner token: {token}"
        )
        if admin_password:
            self.stdout.write(
                f"admin: http://{settings.PUBLIC_DOMAIN}:{settings.WEB_PORT}/admin/"
                f"  user admin  password {admin_password}"
            )


def demo_owner_token(onboarding: Onboarding) -> str:
    """A new token for the demo tenant's owner, when a replay is past showing the first one."""
    secret = new_token_secret()
    owner = get_user_model().objects.get(username=onboarding.owner_email.lower())
    ApiToken.objects.create(
        user=owner,
        tenant=onboarding.tenant,
        name="demo",
        prefix=secret.prefix,
        digest=secret.digest,
    )
    return secret.value


def schema_revisions(schema: str) -> dict[str, str]:
    with owner_connection() as conn:
        return read_revisions(conn, schema)


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

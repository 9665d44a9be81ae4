"""Plain factory functions for test data."""

from __future__ import annotations

from django.contrib.auth.models import User

from control_plane.identity.models import ApiToken, Membership
from control_plane.identity.tokens import new_token_secret
from tenants.models import Domain, Isolation, Tenant, TenantStatus, schema_name_for


def make_tenant(
    slug: str,
    *,
    isolation: str = Isolation.SCHEMA,
    status: str = TenantStatus.ACTIVE,
    domain: str | None = None,
) -> Tenant:
    """A tenant row and its primary domain (no storage: provisioning tests make that)."""
    tenant = Tenant.objects.create(
        name=slug.title(),
        slug=slug,
        schema_name=schema_name_for(slug),
        isolation=isolation,
        status=status,
    )
    Domain.objects.create(domain=domain or f"{slug}.localhost", tenant=tenant, is_primary=True)
    return tenant


def make_user(email: str, *, staff: bool = False) -> User:
    return User.objects.create_user(username=email, email=email, is_staff=staff)


def make_token(user: User, tenant: Tenant, **fields: object) -> str:
    """A token of `user` for `tenant`; returns the plaintext (only its hash is stored)."""
    secret = new_token_secret()
    ApiToken.objects.create(
        user=user, tenant=tenant, prefix=secret.prefix, digest=secret.digest, **fields
    )
    return secret.value


def make_member(tenant: Tenant, email: str, role: str = "member") -> tuple[User, str]:
    """A user with a membership in `tenant` and a token for it."""
    user = make_user(email)
    Membership.objects.create(user=user, tenant=tenant, role=role)
    return user, make_token(user, tenant)


def public_tenant() -> Tenant:
    return Tenant.objects.get(schema_name="public")


def schema_exists(name: str) -> bool:
    """Whether PostgreSQL has a schema called `name` (read as the owner role)."""
    from tenants.database_roles import owner_connection

    with owner_connection() as conn:
        return (
            conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,)).fetchone()
            is not None
        )

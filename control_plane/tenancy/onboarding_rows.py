"""The public-schema rows a provisioning writes, each step as one SQL statement.

Every ORM statement is a round trip, and on a busy machine each round trip is a wait for the
CPU; a transaction adds BEGIN and COMMIT on top. So provisioning counts its attempt while it
loads the request (one statement), and writes the domain, owner, membership and token and marks
the tenant active in one statement of data-modifying CTEs: atomic on its own, no transaction
around it. Values come from model instances (`Field.pre_save` and `get_db_prep_save`), so
defaults and auto_now_add stamps are the ORM's own. These writes send no model signals: the rows
are new, so no cache can hold them yet (a host is only cached once its domain exists).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib.auth import get_user_model
from django.db import connection, models
from django.utils import timezone

from control_plane.identity.models import ApiToken, Membership
from control_plane.tenancy.models import Onboarding, OnboardingStatus
from tenants.identity import Role
from tenants.models import Domain, Tenant, TenantStatus


def _qn(name: str) -> str:
    return connection.ops.quote_name(name)


def _table(model: type[models.Model]) -> str:
    return _qn(model._meta.db_table)


def _col(model: type[models.Model], name: str) -> str:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field)
    return _qn(field.column)


def _pk(model: type[models.Model]) -> str:
    assert model._meta.pk is not None
    return _qn(model._meta.pk.column)


def _fields(model: type[models.Model]) -> list[models.Field[Any, Any]]:
    return list(model._meta.concrete_fields)


def count_attempt(onboarding_id: int) -> Onboarding:
    """The onboarding with its tenant, its attempt counted unless it already succeeded."""
    onboarding_fields, tenant_fields = _fields(Onboarding), _fields(Tenant)
    columns = [f"o.{_qn(f.column)}" for f in onboarding_fields]
    columns += [f"t.{_qn(f.column)}" for f in tenant_fields]
    attempts, status = _col(Onboarding, "attempts"), _col(Onboarding, "status")
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH counted AS (UPDATE {_table(Onboarding)} SET {attempts} = {attempts} + 1"  # noqa: S608 - quoted model names
            f" WHERE {_pk(Onboarding)} = %s AND {status} <> %s RETURNING 1)"
            f" SELECT {', '.join(columns)}, EXISTS (SELECT FROM counted)"
            f" FROM {_table(Onboarding)} o JOIN {_table(Tenant)} t"
            f" ON t.{_pk(Tenant)} = o.{_col(Onboarding, 'tenant')} WHERE o.{_pk(Onboarding)} = %s",
            [onboarding_id, OnboardingStatus.SUCCEEDED, onboarding_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise Onboarding.DoesNotExist(f"no onboarding {onboarding_id}")
    values = _from_db_values(onboarding_fields + tenant_fields, row[:-1])
    split = len(onboarding_fields)
    onboarding = Onboarding.from_db(
        connection.alias, [f.attname for f in onboarding_fields], values[:split]
    )
    onboarding.tenant = Tenant.from_db(
        connection.alias, [f.attname for f in tenant_fields], values[split:]
    )
    if row[-1]:  # the statement's SELECT saw the row as it was before its own UPDATE
        onboarding.attempts += 1
    return onboarding


def _from_db_values(fields: list[models.Field[Any, Any]], row: tuple[Any, ...]) -> list[Any]:
    """Raw column values as the ORM would hand them over (JSON decoded, and so on)."""
    values = []
    for field, value in zip(fields, row, strict=True):
        from_db_value = getattr(field, "from_db_value", None)  # Field.get_db_converters' one
        values.append(value if from_db_value is None else from_db_value(value, None, connection))
    return values


def _new_row(obj: models.Model, **expressions: str) -> tuple[str, str, list[Any]]:
    """Columns, VALUES items and parameters of `obj` as a new row, as the ORM would insert it.

    The auto primary key is left to the database; `expressions` give SQL for some fields (by
    attname) whose values come from elsewhere in the statement.
    """
    columns, items, params = [], [], []
    for field in _fields(type(obj)):
        if field.primary_key:
            continue
        columns.append(_qn(field.column))
        if field.attname in expressions:
            items.append(expressions[field.attname])
        else:
            # Typed, so the row may also come from a SELECT (where a bare NULL would be text).
            items.append(f"%s::{field.db_type(connection)}")
            params.append(field.get_db_prep_save(field.pre_save(obj, add=True), connection))
    return ", ".join(columns), ", ".join(items), params


@dataclass(frozen=True)
class Activated:
    """What activation's statement saw and made, for caching the new tenant's first request."""

    epoch: int  # the cache epoch (activating a new tenant leaves it alone)
    owner_id: int
    owner_active: bool
    token_id: int  # the owner's token
    token_expires_at: datetime | None


def activate(onboarding: Onboarding, revisions: dict[str, str], started: float) -> Activated:
    """Write the identity rows and mark the tenant active and the onboarding succeeded.

    One statement: the primary domain (without DomainMixin.save, which would demote other
    primary domains: there are none), the owner (an existing user with that email, else the
    user named after it, created if absent; a concurrent onboarding creating the same owner
    meets ON CONFLICT and both get the one row), the owner's membership and API token, the
    tenant's status and revisions, and the onboarding's status and provisioning time (from
    `started`, a perf_counter reading). A conflict (the domain taken meanwhile) raises
    IntegrityError and leaves none of it. The in-memory `onboarding` and its tenant are
    updated to match. Returns the cache epoch the statement saw (activating a new tenant leaves
    it alone, tenants migration 0007, so the new host may be cached under it at once) and the
    owner and token it wrote, so the owner's token may be cached too.
    """
    tenant = onboarding.tenant
    user_model = get_user_model()
    email = onboarding.owner_email
    owner = "(SELECT id FROM owner_id)"
    domain = _new_row(Domain(domain=onboarding.domain, tenant=tenant, is_primary=True))
    user = _new_row(user_model(username=email.lower(), email=email))
    membership = _new_row(Membership(tenant=tenant, role=Role.OWNER), user_id=owner)
    owner_token = ApiToken(
        tenant=tenant,
        name="owner (onboarding)",
        prefix=onboarding.token_prefix,
        digest=onboarding.token_digest,
    )
    token = _new_row(owner_token, user_id=owner)
    now = timezone.now()
    revisions_field = Tenant._meta.get_field("revisions")
    assert isinstance(revisions_field, models.JSONField)
    user_table, username = _table(user_model), _col(user_model, "username")
    owner_active = _col(user_model, "is_active")
    provisioning_ms = _col(Onboarding, "provisioning_ms")
    sql = (
        f"WITH new_domain AS (INSERT INTO {_table(Domain)} ({domain[0]}) VALUES ({domain[1]})),"  # noqa: S608 - quoted model names
        f" found_owner AS (SELECT id, {owner_active} AS active FROM {user_table}"
        f" WHERE upper({_col(user_model, 'email')}::text) = upper(%s) ORDER BY id LIMIT 1),"
        f" created_owner AS (INSERT INTO {user_table} ({user[0]}) SELECT {user[1]}"
        f" WHERE NOT EXISTS (SELECT FROM found_owner)"
        f" ON CONFLICT ({username}) DO UPDATE SET {username} = EXCLUDED.{username}"
        f" RETURNING id, {owner_active} AS active),"
        f" owner_id AS (SELECT id, active FROM found_owner"
        f" UNION ALL SELECT id, active FROM created_owner),"
        f" new_membership AS (INSERT INTO {_table(Membership)} ({membership[0]})"
        f" VALUES ({membership[1]})),"
        f" new_token AS (INSERT INTO {_table(ApiToken)} ({token[0]}) VALUES ({token[1]})"
        f" RETURNING {_pk(ApiToken)} AS id),"
        f" activated AS (UPDATE {_table(Tenant)} SET {_col(Tenant, 'status')} = %s,"
        f" {_col(Tenant, 'status_reason')} = '', {_col(Tenant, 'revisions')} = %s,"
        f" {_col(Tenant, 'updated_at')} = %s WHERE {_pk(Tenant)} = %s)"
        f" UPDATE {_table(Onboarding)} SET {_col(Onboarding, 'status')} = %s,"
        f" {_col(Onboarding, 'error')} = '', {_col(Onboarding, 'finished_at')} = %s,"
        f" {provisioning_ms} = round((%s + 1000 * extract(epoch FROM"
        f" clock_timestamp() - statement_timestamp()))::numeric, 2)::float8"
        f" WHERE {_pk(Onboarding)} = %s"
        f" RETURNING {provisioning_ms}, (SELECT value FROM public.cache_epoch WHERE id = 1),"
        f" (SELECT id FROM owner_id), (SELECT active FROM owner_id), (SELECT id FROM new_token)"
    )
    params = [
        *domain[2],
        email,
        *user[2],
        *membership[2],
        *token[2],
        TenantStatus.ACTIVE,
        revisions_field.get_db_prep_save(revisions, connection),
        now,
        tenant.pk,
        OnboardingStatus.SUCCEEDED,
        now,
        (time.perf_counter() - started) * 1000,
        onboarding.pk,
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    tenant.status, tenant.status_reason = TenantStatus.ACTIVE, ""
    tenant.revisions, tenant.updated_at = revisions, now
    onboarding.status, onboarding.error, onboarding.finished_at = (
        OnboardingStatus.SUCCEEDED,
        "",
        now,
    )
    assert row is not None, "the onboarding row is gone"
    onboarding.provisioning_ms = row[0]
    return Activated(
        epoch=int(row[1]),
        owner_id=int(row[2]),
        owner_active=bool(row[3]),
        token_id=int(row[4]),
        token_expires_at=owner_token.expires_at,
    )


def record_request(tenant: Tenant, onboarding: Onboarding) -> bool:
    """Insert the tenant and its onboarding request in one statement; False if the domain is
    already served by a tenant (the rows are then not written).

    Atomic on its own, no transaction around it. Uniqueness is left to the constraints: a slug,
    schema name, requested domain or Idempotency-Key taken raises IntegrityError. Only a domain
    served by a tenant onboarded otherwise (no request row holds it) needs the look in the
    statement. Sets the primary keys and stamps on both instances, as save() would.
    """
    tenant_row = _new_row(tenant)
    onboarding_row = _new_row(onboarding, tenant_id="(SELECT id FROM new_tenant)")
    sql = (
        f"WITH new_tenant AS (INSERT INTO {_table(Tenant)} ({tenant_row[0]})"  # noqa: S608 - quoted model names
        f" SELECT {tenant_row[1]} WHERE NOT EXISTS (SELECT FROM {_table(Domain)}"
        f" WHERE {_col(Domain, 'domain')} = %s) RETURNING {_pk(Tenant)} AS id),"
        f" new_onboarding AS (INSERT INTO {_table(Onboarding)} ({onboarding_row[0]})"
        f" SELECT {onboarding_row[1]} FROM new_tenant RETURNING {_pk(Onboarding)} AS id)"
        f" SELECT new_tenant.id, new_onboarding.id FROM new_tenant, new_onboarding"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [*tenant_row[2], onboarding.domain, *onboarding_row[2]])
        row = cursor.fetchone()
    if row is None:
        return False
    tenant.pk, onboarding.pk = row
    onboarding.tenant = tenant
    tenant._state.adding = onboarding._state.adding = False
    return True

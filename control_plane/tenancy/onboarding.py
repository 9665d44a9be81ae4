"""Onboarding: the one service the admin, the operator API and the CLI call to add a tenant.

`request_onboarding` validates and records the request and returns the owner's token once;
`provision_onboarding` (run by a worker) makes the storage and then, in one transaction, the
domain, owner user, membership and token, and marks the tenant active. A failure leaves the
tenant `failed` with the reason and nothing else behind; `retry_onboarding` starts it again.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Mapping
from contextlib import nullcontext
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from control_plane.celery import app as celery_app
from control_plane.celery import (
    broker_unavailable,
    broker_unreachable_errors,
    refuse_while_broker_down,
)
from control_plane.identity.principals import CachedPrincipal, prime_principal
from control_plane.identity.tokens import (
    TokenSecret,
    digests_match,
    new_token_secret,
    seal_token,
    unseal_token,
)
from control_plane.tenancy import onboarding_finished
from control_plane.tenancy.lifecycle import LifecycleConflict
from control_plane.tenancy.models import Onboarding, OnboardingStatus
from control_plane.tenancy.onboarding_rows import (
    Activated,
    activate,
    count_attempt,
    record_request,
)
from control_plane.worker import recovery
from taskflow import api_versions
from tenants.hosts import is_valid_hostname, normalise_host, routable, routing_host
from tenants.identity import Principal, Role
from tenants.models import Domain, Isolation, Tenant, TenantStatus, schema_name_for
from tenants.outages import is_connection_failure
from tenants.problems import Problem
from tenants.provisioning import drop_storage, provision_storage
from tenants.resolution import forget_tenant, remember_host
from tenants.spares import refill_wanted

SLUG_PATTERN = re.compile(r"^[a-z][a-z0-9_]{1,39}$")
RESERVED_SLUGS = frozenset({"public", "shared", "template", "information_schema"})
PROVISION_TASK = "control_plane.tasks.provision_tenant"
REFILL_SPARES_TASK = "tenants.tasks.refill_spares"
NOT_REPEATED_NOTE = (
    "The owner token is shown with the first response and repeated only to a retry within"
    " {seconds} s; this one came later, so it is not shown. Issue the owner a new token."
)

logger = logging.getLogger(__name__)


class InvalidOnboarding(Problem):
    """The onboarding input is invalid; `errors` maps each field to its messages."""

    status = 400
    title = "Invalid onboarding request"

    def __init__(self, errors: dict[str, list[str]]) -> None:
        flat = [{"field": f, "message": m} for f, messages in errors.items() for m in messages]
        super().__init__("The onboarding request has invalid fields.", errors=flat)
        self.errors = errors


class OnboardingRefused(InvalidOnboarding):
    """Well-formed, but a rule refuses it: a reserved slug, a domain that would never be served."""

    status = 422


class OnboardingConflict(InvalidOnboarding):
    """The slug or domain is already taken (by a tenant, or by an onboarding under way)."""

    status = 409
    title = "Onboarding conflict"


@dataclass(frozen=True)
class OnboardingInput:
    name: str
    slug: str
    domain: str
    isolation: str
    owner_email: str


@dataclass(frozen=True)
class OnboardingRequested:
    onboarding: Onboarding
    # The owner's API token: shown here once, stored only as a hash; a replay of the same
    # Idempotency-Key repeats it within ONBOARDING_TOKEN_REPLAY_SECONDS, later it is None.
    token: str | None
    created: bool

    @property
    def token_note(self) -> str:
        """Why there is no token ("" when there is one)."""
        if self.token is not None:
            return ""
        return NOT_REPEATED_NOTE.format(seconds=settings.ONBOARDING_TOKEN_REPLAY_SECONDS)


def validate_onboarding(
    *, name: str, slug: str, domain: str, isolation: str, owner_email: str
) -> OnboardingInput:
    """Check every field and the uniqueness of slug and domain; raise with all errors at once.

    The status says what kind of refusal it is (each error still names its field): malformed
    input is InvalidOnboarding (400), a reserved slug or a domain that would never be served is
    OnboardingRefused (422), a slug or domain already taken is OnboardingConflict (409). With
    errors of several kinds the first of these wins.
    """
    fields = {"name": name, "slug": slug, "domain": domain, "isolation": isolation}
    return _validated({**fields, "owner_email": owner_email}, check_taken=True)


def _validated(fields: Mapping[str, str], *, check_taken: bool) -> OnboardingInput:
    """validate_onboarding's checks; `check_taken=False` leaves uniqueness to the constraints
    (request_onboarding then raises the same OnboardingConflict) and sends no query."""
    name, slug, domain = fields["name"], fields["slug"], fields["domain"]
    isolation, owner_email = fields["isolation"], fields["owner_email"]
    malformed: dict[str, list[str]] = {}
    refused: dict[str, list[str]] = {}
    taken: dict[str, list[str]] = {}
    name, slug = (name or "").strip(), (slug or "").strip()
    domain, owner_email = normalise_host(domain or ""), (owner_email or "").strip()
    if not name:
        malformed.setdefault("name", []).append("Name is required.")
    elif len(name) > 200:
        malformed.setdefault("name", []).append("Name is at most 200 characters.")
    if not SLUG_PATTERN.match(slug):
        malformed.setdefault("slug", []).append(
            "Slug must start with a lowercase letter and hold 2-40 lowercase letters, digits or underscores."
        )
    elif slug in RESERVED_SLUGS or slug.startswith("pg_"):
        refused.setdefault("slug", []).append(f"Slug {slug!r} is reserved.")
    if not is_valid_hostname(domain):
        malformed.setdefault("domain", []).append(f"{domain!r} is not a valid host name.")
    elif not routable(domain):
        refused.setdefault("domain", []).append(
            f"{domain!r} would never be served: requests for it go to {routing_host(domain)!r}."
        )
    if check_taken:
        taken = _taken(
            slug=slug if "slug" not in malformed and "slug" not in refused else "",
            domain=domain if "domain" not in malformed and "domain" not in refused else "",
        )
    if isolation not in Isolation.values:
        malformed.setdefault("isolation", []).append(
            f"Isolation must be one of {', '.join(Isolation.values)}."
        )
    try:
        validate_email(owner_email)
    except ValidationError:
        malformed.setdefault("owner_email", []).append(
            f"{owner_email!r} is not a valid email address."
        )
    for kind, errors in ((InvalidOnboarding, malformed), (OnboardingRefused, refused)):
        if errors:
            raise kind(_merged(malformed, refused, taken))
    if taken:
        raise OnboardingConflict(taken)
    return OnboardingInput(
        name=name, slug=slug, domain=domain, isolation=isolation, owner_email=owner_email
    )


def _taken(*, slug: str, domain: str) -> dict[str, list[str]]:
    """The slug and domain among these that a tenant or a request already holds ("" skips)."""
    taken: dict[str, list[str]] = {}
    if slug and Tenant.objects.filter(slug=slug).exists():
        taken["slug"] = [f"A tenant with slug {slug!r} already exists."]
    if domain and (
        Domain.objects.filter(domain=domain).exists()
        or Onboarding.objects.filter(domain=domain).exists()
    ):
        taken["domain"] = [f"Domain {domain!r} is already taken."]
    return taken


def _merged(*kinds: dict[str, list[str]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for errors in kinds:
        for field_name, messages in errors.items():
            merged.setdefault(field_name, []).extend(messages)
    return merged


def request_onboarding(
    *,
    data: OnboardingInput,
    idempotency_key: str | None = None,
    requested_by: User | None = None,
    enqueue: bool = True,
    _replay_checked: bool = False,
) -> OnboardingRequested:
    """Record the request and queue provisioning; the same idempotency key returns the same one.

    `enqueue=False` leaves provisioning to the caller (set-up scripts that run before workers).
    One statement writes the tenant and the request (onboarding_rows.record_request); a slug
    or domain taken surfaces from the constraints as OnboardingConflict, as validation says it.
    """
    if idempotency_key and not _replay_checked:
        existing = _existing(idempotency_key)
        if existing is not None:
            return _replay(existing, data, idempotency_key)
    if enqueue:
        refuse_while_broker_down()
    secret = new_token_secret()
    if idempotency_key:
        # Kept before the commit, so a retry after a lost response finds it; a record of a
        # request that then loses a race never matches the winner's digest (_replayed_token).
        _keep_for_replay(idempotency_key, secret)
    tenant = Tenant(
        name=data.name,
        slug=data.slug,
        schema_name=schema_name_for(data.slug),
        isolation=data.isolation,
        status=TenantStatus.PROVISIONING,
        # Pinned to the newest version at onboarding; later versions never surprise it.
        api_version=api_versions.CATALOG.latest.name,
    )
    onboarding = Onboarding(
        tenant=tenant,
        domain=data.domain,
        owner_email=data.owner_email,
        token_prefix=secret.prefix,
        token_digest=secret.digest,
        idempotency_key=idempotency_key or None,
        # By id: a token's lazy user (identity.authentication.TokenUser) stays unloaded.
        requested_by_id=requested_by.pk if requested_by is not None else None,
    )
    try:
        # Atomic on its own (no BEGIN/COMMIT round trips); inside a caller's transaction, a
        # savepoint keeps that one usable after a conflict.
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            recorded = record_request(tenant, onboarding)
    except IntegrityError as exc:
        # A slug, domain or key taken, perhaps by a concurrent request just now.
        if idempotency_key:
            existing = _existing(idempotency_key)
            if existing is not None:
                return _replay(existing, data, idempotency_key)
        taken = _taken(slug=data.slug, domain=data.domain)
        if taken:
            raise OnboardingConflict(taken) from exc
        raise LifecycleConflict("A tenant with this slug or domain was just created.") from exc
    if not recorded:  # the domain is served by a tenant onboarded otherwise
        raise OnboardingConflict(_taken(slug="", domain=data.domain))
    # The tenant was created just now: it has no domains yet (the worker adds the first).
    tenant._prefetched_objects_cache = {"domains": Domain.objects.none()}
    if enqueue:
        transaction.on_commit(lambda: _enqueue_or_withdraw(onboarding))
    return OnboardingRequested(onboarding=onboarding, token=secret.value, created=True)


def _existing(idempotency_key: str) -> Onboarding | None:
    return (
        Onboarding.objects.select_related("tenant").filter(idempotency_key=idempotency_key).first()
    )


def _replay(existing: Onboarding, data: OnboardingInput, key: str) -> OnboardingRequested:
    if existing.tenant.slug != data.slug or existing.domain != data.domain:
        raise LifecycleConflict("This Idempotency-Key was used for another onboarding request.")
    return OnboardingRequested(
        onboarding=existing, token=_replayed_token(existing, key), created=False
    )


def _replay_cache_key(idempotency_key: str) -> str:
    return "onboarding-token:" + hashlib.sha256(idempotency_key.encode()).hexdigest()


def _keep_for_replay(idempotency_key: str, secret: TokenSecret) -> None:
    """The token, sealed, in Redis for the replay window; without Redis a replay shows none."""
    window = settings.ONBOARDING_TOKEN_REPLAY_SECONDS
    try:
        cache.set(
            _replay_cache_key(idempotency_key),
            seal_token(secret.value, idempotency_key),
            timeout=window,
        )
    except Exception:
        logger.warning("onboarding token not kept for replay: cache unavailable", exc_info=True)


def _replayed_token(existing: Onboarding, idempotency_key: str) -> str | None:
    """The owner token of `existing` if its sealed record is still within its window."""
    try:
        sealed = cache.get(_replay_cache_key(idempotency_key))
    except Exception:
        logger.warning("onboarding token replay: cache unavailable", exc_info=True)
        return None
    if not isinstance(sealed, bytes):
        return None
    value = unseal_token(
        sealed, idempotency_key, max_age_seconds=settings.ONBOARDING_TOKEN_REPLAY_SECONDS
    )
    if value is None or not digests_match(value, existing.token_digest):
        return None
    return value


def submit_onboarding(
    *,
    fields: dict[str, str],
    idempotency_key: str | None = None,
    requested_by: User | None = None,
) -> OnboardingRequested:
    """Validate and request in one step; a replayed idempotency key skips validation.

    A retry of a request that already created its tenant must not fail on "slug taken".
    """
    if idempotency_key:
        existing = _existing(idempotency_key)
        if existing is not None:
            data = OnboardingInput(
                **{k: str(fields.get(k, "")) for k in OnboardingInput.__dataclass_fields__}
            )
            return _replay(existing, data, idempotency_key)
    data = _validated(fields, check_taken=False)
    return request_onboarding(
        data=data,
        idempotency_key=idempotency_key,
        requested_by=requested_by,
        _replay_checked=True,
    )


MAX_WAIT_SECONDS = onboarding_finished.MAX_WAIT_SECONDS


def wait_for_provisioning(onboarding: Onboarding, seconds: float) -> bool:
    """Whether the onboarding is done (its tenant active) within `seconds` (at most
    MAX_WAIT_SECONDS); False when it failed or is still under way."""
    if onboarding.status == OnboardingStatus.SUCCEEDED:
        return True
    if onboarding.status == OnboardingStatus.FAILED:
        return False
    return onboarding_finished.wait(onboarding.pk, seconds) == OnboardingStatus.SUCCEEDED


# The message's `requester` when the sender does not know it (a resend): the task looks it up.
REQUESTER_UNKNOWN = -1


def _send(onboarding_id: int, requester: int | None = REQUESTER_UNKNOWN) -> None:
    """Publish the provisioning message. No sender reads the task's result (the outcome is
    the onboarding's row, and Prefer: wait listens on onboarding_finished), so the publish
    does not subscribe to it: with the Redis result backend every send_task otherwise
    SUBSCRIBEs to the result's channel on the request's thread and UNSUBSCRIBEs when the
    AsyncResult is dropped, work on the POST's path for nothing."""
    kwargs = {} if requester == REQUESTER_UNKNOWN else {"requester": requester}
    celery_app.send_task(PROVISION_TASK, args=[onboarding_id], kwargs=kwargs, ignore_result=True)


def _unfinished() -> list[int]:
    pending = Onboarding.objects.filter(
        status=OnboardingStatus.PENDING, tenant__status=TenantStatus.PROVISIONING
    )
    return list(pending.values_list("pk", flat=True))


# Beat sends a provisioning again when its message is lost or its worker died.
PROVISIONING = recovery.register("onboarding", unfinished=_unfinished, resend=_send)


def enqueue_provisioning(onboarding_id: int, requester: int | None = REQUESTER_UNKNOWN) -> None:
    """Queue provisioning; a known `requester` (None: nobody) travels in the message, so the
    worker need not read it before it asks for the requester's fair slot."""
    recovery.send(PROVISIONING, onboarding_id, requester=requester)


def _enqueue_or_withdraw(onboarding: Onboarding) -> None:
    """Queue provisioning; an unreachable broker withdraws the request (503, nothing recorded)."""
    try:
        enqueue_provisioning(onboarding.pk, onboarding.requested_by_id)
    except broker_unreachable_errors() as exc:
        Onboarding.objects.filter(pk=onboarding.pk).delete()
        Tenant.objects.filter(pk=onboarding.tenant_id).delete()
        raise broker_unavailable() from exc


def provision_onboarding(onboarding_id: int, *, will_retry: bool = False) -> Onboarding:
    """Make the tenant's storage, then its identity rows, then mark it active (or failed).

    A lost database connection is not the tenant's failure: with `will_retry` (the task has
    attempts left) it is raised without marking anything, and the next attempt starts over.
    Three round trips when a spare is ready or in rls mode: count the attempt while loading,
    the storage (one script as the owner), and the identity rows with the status (one
    statement, see control_plane.tenancy.onboarding_rows).
    """
    onboarding = count_attempt(onboarding_id)
    if onboarding.status != OnboardingStatus.PENDING:
        return onboarding  # a late duplicate message: done, or failed until an operator retries
    tenant = onboarding.tenant
    started = time.perf_counter()
    try:
        revisions = provision_storage(tenant)
        activated = activate(onboarding, revisions, started)
    except Exception as exc:
        if not (will_retry and is_connection_failure(exc)):
            _mark_failed(onboarding, exc)
            onboarding_finished.announce(onboarding.pk, OnboardingStatus.FAILED)
        raise
    # The owner's first request finds its host and its token cached: no query before its answer.
    remember_host(onboarding.domain, tenant, activated.epoch)
    _prime_owner_token(onboarding, activated)
    onboarding_finished.announce(onboarding.pk, OnboardingStatus.SUCCEEDED)
    if tenant.isolation == Isolation.SCHEMA and settings.SPARE_SCHEMAS and refill_wanted():
        celery_app.send_task(REFILL_SPARES_TASK)
    return onboarding


def _prime_owner_token(onboarding: Onboarding, activated: Activated) -> None:
    """Cache what authentication would decide for the owner's token on the new host (the
    owner's role there, from the rows just committed); an inactive owner is left to the
    database, which refuses it."""
    if not activated.owner_active:
        return
    principal = Principal(
        user_id=activated.owner_id,
        tenant_id=onboarding.tenant_id,
        role=Role.OWNER,
        token_id=activated.token_id,
        is_staff=False,
    )
    entry = CachedPrincipal(principal, activated.token_expires_at)
    prime_principal(onboarding.token_digest, entry, timezone.now(), activated.epoch)


def _mark_failed(onboarding: Onboarding, exc: Exception) -> None:
    """Undo the storage and record why; identity rows were never committed."""
    tenant = onboarding.tenant
    try:
        drop_storage(tenant)
    finally:
        reason = f"{type(exc).__name__}: {exc}"[:2000]
        Tenant.objects.filter(pk=tenant.pk).update(status=TenantStatus.FAILED, status_reason=reason)
        forget_tenant(tenant)
        Onboarding.objects.filter(pk=onboarding.pk).update(
            status=OnboardingStatus.FAILED, error=reason, finished_at=timezone.now()
        )


def retry_onboarding(tenant: Tenant) -> None:
    """Queue provisioning again for a failed tenant (only once, however many operators press
    retry), or send it again for one stuck provisioning that no live worker runs (its message
    lost; beat would resend it within a minute)."""
    onboarding = Onboarding.objects.filter(tenant_id=tenant.pk).first()
    if onboarding is not None and _stuck(tenant, onboarding):
        recovery.operator_retry(
            PROVISIONING,
            onboarding.pk,
            refused=lambda why: LifecycleConflict(
                f"Tenant {tenant.slug!r} is provisioning and not stuck: {why}."
            ),
        )
        tenant.refresh_from_db()
        return
    with transaction.atomic():
        retried = Tenant.objects.filter(pk=tenant.pk, status=TenantStatus.FAILED).update(
            status=TenantStatus.PROVISIONING, status_reason=""
        )
        if not retried or onboarding is None:
            tenant.refresh_from_db()
            raise LifecycleConflict(
                f"Tenant {tenant.slug!r} is {tenant.status}; only failed tenants and stuck"
                " provisionings are retried."
            )
        Onboarding.objects.filter(pk=onboarding.pk).update(
            status=OnboardingStatus.PENDING, error=""
        )
        onboarding_finished.forget(onboarding.pk)  # the failed attempt's word
        # Marked now, sent at commit: a second retry meanwhile finds the message waiting. An
        # unreachable broker rolls the retry back (503): the tenant stays failed.
        try:
            recovery.expect_message(PROVISIONING, onboarding.pk)
        except broker_unreachable_errors() as exc:
            raise broker_unavailable() from exc
        transaction.on_commit(lambda: _send(onboarding.pk))
    forget_tenant(tenant)
    tenant.refresh_from_db()


def _stuck(tenant: Tenant, onboarding: Onboarding) -> bool:
    tenant.refresh_from_db()
    return (
        tenant.status == TenantStatus.PROVISIONING and onboarding.status == OnboardingStatus.PENDING
    )

"""Onboarding through the one service, with provisioning in a real Celery worker."""

from __future__ import annotations

import hmac
import threading
import time
from types import SimpleNamespace
from typing import Any

import psycopg
import pytest
from cryptography import fernet
from django.conf import settings
from django.contrib.auth.models import User
from django.test import Client

from control_plane.identity.models import ApiToken, Membership
from control_plane.identity.tokens import new_token_secret
from control_plane.tenancy import onboarding as onboarding_service
from control_plane.tenancy.lifecycle import LifecycleConflict
from control_plane.tenancy.models import Onboarding, OnboardingStatus
from control_plane.tenancy.onboarding import (
    InvalidOnboarding,
    enqueue_provisioning,
    request_onboarding,
    retry_onboarding,
    validate_onboarding,
)
from control_plane.worker import recovery
from tenants.database_roles import owner_connection, owner_role_name
from tenants.models import Domain, Tenant, TenantStatus
from tests.conftest import WorkerProcess
from tests.factories import make_token, make_user, public_tenant, schema_exists


def host(slug: str) -> str:
    """The host a test tenant is served at (host names have no underscores)."""
    return f"{slug.replace('_', '-')}.localhost"


def onboarding_fields(slug: str, **overrides: str) -> dict[str, str]:
    fields = {
        "name": f"Tenant {slug}",
        "slug": slug,
        "domain": host(slug),
        "isolation": "schema",
        "owner_email": f"owner-{slug}@example.com",
    }
    fields.update(overrides)
    return fields


def onboard(slug: str, **overrides: str) -> tuple[Tenant, str]:
    requested = request_onboarding(data=validate_onboarding(**onboarding_fields(slug, **overrides)))
    assert requested.token is not None  # a new onboarding always shows its token
    return requested.onboarding.tenant, requested.token


def wait_for(tenant: Tenant, *statuses: str, timeout: float = 30) -> Tenant:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        tenant.refresh_from_db()
        if tenant.status in statuses:
            return tenant
        time.sleep(0.05)
    raise AssertionError(f"{tenant.slug} still {tenant.status} after {timeout}s")


def counts() -> tuple[int, int, int, int, int]:
    return (
        Tenant.objects.count(),
        Domain.objects.count(),
        Onboarding.objects.count(),
        Membership.objects.count(),
        User.objects.count(),
    )


INVALID_INPUTS = [
    ("slug", {"slug": "1abc"}, "must start with a lowercase letter"),
    ("slug", {"slug": "a"}, "2-40"),
    ("slug", {"slug": "Abc"}, "lowercase"),
    ("slug", {"slug": "a-b"}, "underscores"),
    ("slug", {"slug": "a" * 41}, "2-40"),
    ("slug", {"slug": "public"}, "reserved"),
    ("slug", {"slug": "shared"}, "reserved"),
    ("slug", {"slug": "template"}, "reserved"),
    ("slug", {"slug": "information_schema"}, "reserved"),
    ("slug", {"slug": "pg_things"}, "reserved"),
    ("domain", {"domain": "not a host"}, "not a valid host name"),
    ("domain", {"domain": "-bad.localhost"}, "not a valid host name"),
    ("domain", {"domain": ""}, "not a valid host name"),
    ("domain", {"domain": "x" * 64 + ".localhost"}, "not a valid host name"),
    ("domain", {"domain": "localhost"}, "already taken"),
    # django-tenants serves www.x as x: a tenant at a www. name could never be reached.
    ("domain", {"domain": "www.sa.localhost"}, "would never be served"),
    ("domain", {"domain": " WWW.Other.localhost. "}, "requests for it go to 'other.localhost'"),
    ("isolation", {"isolation": "shared"}, "must be one of"),
    ("owner_email", {"owner_email": "nobody"}, "not a valid email"),
    ("name", {"name": "  "}, "required"),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("field", "override", "message"), INVALID_INPUTS)
def test_invalid_input_is_refused_and_nothing_is_created(field, override, message, unique) -> None:
    slug = override.pop("slug", f"ok_{unique}") if "slug" in override else f"ok_{unique}"
    before = counts()
    with pytest.raises(InvalidOnboarding) as caught:
        validate_onboarding(**onboarding_fields(slug, **override))
    assert field in caught.value.errors
    assert message in " ".join(caught.value.errors[field])
    assert counts() == before


@pytest.mark.django_db
def test_duplicate_slug_and_pending_domain_are_refused(unique) -> None:
    onboard(f"dup_{unique}")
    with pytest.raises(InvalidOnboarding) as caught:
        validate_onboarding(**onboarding_fields(f"dup_{unique}", domain=host(f"other{unique}")))
    assert "already exists" in caught.value.errors["slug"][0]
    with pytest.raises(InvalidOnboarding) as caught:
        validate_onboarding(**onboarding_fields(f"dup2_{unique}", domain=host(f"dup_{unique}")))
    assert "already taken" in caught.value.errors["domain"][0]


@pytest.mark.django_db
def test_every_error_is_reported_at_once() -> None:
    with pytest.raises(InvalidOnboarding) as caught:
        validate_onboarding(name="", slug="X", domain="?", isolation="x", owner_email="y")
    assert set(caught.value.errors) == {"name", "slug", "domain", "isolation", "owner_email"}


@pytest.mark.worker
@pytest.mark.parametrize("isolation", ["schema", "rls"])
def test_onboarding_provisions_in_a_worker_and_the_token_works(
    committed, celery_worker_process: WorkerProcess, unique, isolation
) -> None:
    slug = f"ob_{isolation}_{unique}"
    tenant, token = onboard(slug, isolation=isolation)
    assert tenant.status == TenantStatus.PROVISIONING
    wait_for(tenant, TenantStatus.ACTIVE)
    assert schema_exists(f"t_{slug}") is (isolation == "schema")
    if isolation == "schema":
        assert set(tenant.revisions) == {"django", "alembic"}
    onboarding = Onboarding.objects.get(tenant=tenant)
    assert onboarding.status == OnboardingStatus.SUCCEEDED
    assert onboarding.provisioning_ms is not None
    assert Membership.objects.get(tenant=tenant).role == "owner"
    stored = ApiToken.objects.get(tenant=tenant)
    assert token not in (stored.digest, stored.prefix)
    response = Client().get(
        "/api/v1/me", HTTP_HOST=host(slug), HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 200
    assert response.json() == {
        "user": {"id": stored.user_id, "email": f"owner-{slug}@example.com"},
        "tenant": slug,
        "role": "owner",
    }


@pytest.mark.worker
def test_ten_onboardings_started_at_once_all_succeed(
    committed, celery_worker_process, unique
) -> None:
    results: list[Tenant] = []
    errors: list[BaseException] = []

    def start(i: int) -> None:
        from django.db import connection

        try:
            # Half of them share one owner, who must be created exactly once.
            owner = f"shared-{unique}@example.com" if i % 2 else f"solo{i}-{unique}@example.com"
            isolation = "rls" if i % 3 == 0 else "schema"
            results.append(onboard(f"c{i}_{unique}", owner_email=owner, isolation=isolation)[0])
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=start, args=(i,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for tenant in results:
        assert (
            wait_for(tenant, TenantStatus.ACTIVE, TenantStatus.FAILED).status == TenantStatus.ACTIVE
        ), tenant.status_reason
    assert User.objects.filter(email=f"shared-{unique}@example.com").count() == 1


@pytest.mark.worker
def test_failed_provisioning_leaves_nothing_half_made_and_retry_succeeds(
    committed, celery_worker_process, unique
) -> None:
    slug = f"fail_{unique}"
    requested = request_onboarding(
        data=validate_onboarding(**onboarding_fields(slug)), enqueue=False
    )
    tenant, token = requested.onboarding.tenant, requested.token
    # Someone takes the domain between the request and its provisioning.
    blocker = Domain.objects.create(domain=host(slug), tenant=public_tenant(), is_primary=False)
    enqueue_provisioning(requested.onboarding.pk)
    try:
        wait_for(tenant, TenantStatus.FAILED)
    finally:
        blocker.delete()
    assert "IntegrityError" in tenant.status_reason
    assert not schema_exists(f"t_{slug}")
    assert not Domain.objects.filter(tenant=tenant).exists()
    assert not Membership.objects.filter(tenant=tenant).exists()
    assert not ApiToken.objects.filter(tenant=tenant).exists()

    retry_onboarding(tenant)
    wait_for(tenant, TenantStatus.ACTIVE)
    assert schema_exists(f"t_{slug}")
    assert Onboarding.objects.get(tenant=tenant).attempts == 2
    response = Client().get(
        "/api/v1/me", HTTP_HOST=host(slug), HTTP_AUTHORIZATION=f"Bearer {token}"
    )
    assert response.status_code == 200


@pytest.mark.django_db
def test_retry_refuses_a_tenant_that_has_not_failed_and_is_not_stuck(unique) -> None:
    tenant, _ = onboard(f"nr_{unique}")
    onboarding = Onboarding.objects.get(tenant=tenant)
    recovery.expect_message(onboarding_service.PROVISIONING, onboarding.pk)  # its message waits
    with pytest.raises(LifecycleConflict, match="has a message waiting"):
        retry_onboarding(tenant)
    Tenant.objects.filter(pk=tenant.pk).update(status=TenantStatus.ACTIVE)
    Onboarding.objects.filter(pk=onboarding.pk).update(status=OnboardingStatus.SUCCEEDED)
    with pytest.raises(LifecycleConflict, match="only failed tenants and stuck provisionings"):
        retry_onboarding(tenant)


@pytest.mark.django_db
def test_idempotency_key_returns_the_same_onboarding_and_token(unique) -> None:
    data = validate_onboarding(**onboarding_fields(f"idem_{unique}"))
    first = request_onboarding(data=data, idempotency_key=f"key-{unique}", enqueue=False)
    again = request_onboarding(data=data, idempotency_key=f"key-{unique}", enqueue=False)
    assert again.onboarding.pk == first.onboarding.pk
    assert again.token == first.token
    assert again.created is False
    other = validate_onboarding(**onboarding_fields(f"idem2_{unique}"))
    with pytest.raises(LifecycleConflict):
        request_onboarding(data=other, idempotency_key=f"key-{unique}", enqueue=False)


def past_the_replay_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fernet reads the clock through its module's `time`: move it past the window."""
    later = time.time() + settings.ONBOARDING_TOKEN_REPLAY_SECONDS + 5
    monkeypatch.setattr(fernet, "time", SimpleNamespace(time=lambda: later))


@pytest.mark.django_db
def test_an_idempotent_onboardings_token_is_random_and_repeated_only_within_the_window(
    unique, monkeypatch
) -> None:
    key = f"key-{unique}"
    data = validate_onboarding(**onboarding_fields(f"win_{unique}"))
    first = request_onboarding(data=data, idempotency_key=key, enqueue=False)
    assert first.token is not None
    # Not computable from SECRET_KEY and the key, as HMAC(SECRET_KEY, key) was.
    derived = hmac.new(settings.SECRET_KEY.encode(), f"onboarding:{key}".encode(), "sha256")
    assert derived.hexdigest()[10:] not in first.token
    assert request_onboarding(data=data, idempotency_key=key, enqueue=False).token == first.token

    past_the_replay_window(monkeypatch)
    late = request_onboarding(data=data, idempotency_key=key, enqueue=False)
    assert (late.onboarding.pk, late.created, late.token) == (first.onboarding.pk, False, None)
    assert "not shown" in late.token_note


@pytest.mark.django_db
def test_a_replay_never_shows_a_token_other_than_the_onboardings_own(unique) -> None:
    """A record kept by a request that lost the race for its key does not match the winner."""
    key = f"key-{unique}"
    data = validate_onboarding(**onboarding_fields(f"race_{unique}"))
    first = request_onboarding(data=data, idempotency_key=key, enqueue=False)
    onboarding_service._keep_for_replay(key, new_token_secret())
    again = request_onboarding(data=data, idempotency_key=key, enqueue=False)
    assert first.token is not None
    assert again.token is None


def test_provisioning_runs_as_owner_not_app_role() -> None:
    with owner_connection() as conn:
        assert isinstance(conn, psycopg.Connection)
        row = conn.execute("SELECT current_user").fetchone()
    assert row == (owner_role_name(),)


@pytest.mark.django_db
def test_the_domain_is_stored_as_requests_name_it(unique) -> None:
    data = validate_onboarding(
        **onboarding_fields(f"n_{unique}", domain=f" N-{unique}.LocalHost. ")
    )
    assert data.domain == f"n-{unique}.localhost"


@pytest.mark.worker
def test_the_operator_api_with_prefer_wait_answers_201_once_the_tenant_is_active(
    committed, celery_worker_process, unique
) -> None:
    token = make_token(make_user(f"staffw{unique}@example.com", staff=True), public_tenant())
    ops = Client(HTTP_HOST="localhost", HTTP_AUTHORIZATION=f"Bearer {token}")
    response = ops.post(
        "/ops/v1/tenants",
        {**onboarding_fields(f"w_{unique}"), "isolation": "rls"},
        content_type="application/json",
        HTTP_PREFER="respond-async, wait=10",
    )
    assert response.status_code == 201, response.content
    assert response["Preference-Applied"] == "wait=10"
    body = response.json()
    assert body["tenant"]["status"] == "active"
    assert body["tenant"]["domains"] == [host(f"w_{unique}")]
    owner = Client().get(
        "/api/v1/me",
        HTTP_HOST=host(f"w_{unique}"),
        HTTP_AUTHORIZATION=f"Bearer {body['owner_token']}",
    )
    assert owner.status_code == 200, owner.content
    replay = ops.post(
        "/ops/v1/tenants",
        {**onboarding_fields(f"w_{unique}"), "isolation": "rls"},
        content_type="application/json",
        HTTP_PREFER="wait=10",
    )
    assert replay.status_code == 409  # no Idempotency-Key: a second request, the slug taken


def test_the_provisioning_message_is_sent_without_subscribing_to_its_result(monkeypatch) -> None:
    """The POST never reads the task's result: with the Redis result backend a send_task that
    may return one SUBSCRIBEs to its channel on the request's thread (and UNSUBSCRIBEs later),
    round trips on the POST's path for nothing. The message itself still goes out."""
    from control_plane.celery import app as celery_app

    subscribed: list[str] = []
    published: list[str] = []
    monkeypatch.setattr(
        celery_app.backend, "on_task_call", lambda producer, task_id: subscribed.append(task_id)
    )
    monkeypatch.setattr(
        celery_app.amqp,
        "send_task_message",
        lambda producer, name, message, **options: published.append(name),
    )
    onboarding_service._send(12345, requester=None)
    assert published == [onboarding_service.PROVISION_TASK]
    assert subscribed == []


@pytest.mark.worker
def test_the_requester_travels_in_the_provisioning_message_and_the_worker_provisions_it(
    committed, celery_worker_process, unique
) -> None:
    """The worker needs the requester (for its fair cap) before it starts: the sender knows it,
    so the message carries it and the worker does not read it first."""
    from celery.signals import before_task_publish

    bodies: list[tuple[list[int], dict[str, object], object]] = []

    def seen(sender: object = None, body: Any = None, **_: object) -> None:
        if sender == onboarding_service.PROVISION_TASK:
            bodies.append(body)

    operator = make_user(f"operator-{unique}@example.com", staff=True)
    before_task_publish.connect(seen, weak=False)
    try:
        requested = request_onboarding(
            data=validate_onboarding(**onboarding_fields(f"rq_{unique}")), requested_by=operator
        )
    finally:
        before_task_publish.disconnect(seen)
    args, kwargs, _ = bodies[0]  # Celery's message protocol 2: (args, kwargs, embed)
    assert (args, kwargs) == ([requested.onboarding.pk], {"requester": operator.pk})
    wait_for(requested.onboarding.tenant, TenantStatus.ACTIVE)

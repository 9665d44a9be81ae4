"""Tenant resolution is cached in Redis and forgotten when a tenant or domain changes."""

from __future__ import annotations

import warnings

import pytest
from django.core.cache import CacheKeyWarning
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from tenants.models import Domain, TenantStatus
from tenants.resolution import key_part, resolve_tenant
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db


def tenant_table_queries(client: Client, host: str) -> list[str]:
    with CaptureQueriesContext(connection) as captured:
        client.get("/", HTTP_HOST=host)
    return [q["sql"] for q in captured.captured_queries if "tenants_" in q["sql"]]


def test_warm_cache_resolves_without_querying_tenant_tables(client, unique, settings) -> None:
    settings.CACHE_EPOCH_CHECK_SECONDS = 60  # the epoch's once-a-second read is not resolution's
    make_tenant(f"c{unique}")
    host = f"c{unique}.localhost"
    assert tenant_table_queries(client, host) != []  # cold: one lookup fills the cache
    assert tenant_table_queries(client, host) == []  # warm: none


def test_status_change_is_seen_at_once(client, unique) -> None:
    tenant = make_tenant(f"s{unique}")
    host = f"s{unique}.localhost"
    assert client.get("/", HTTP_HOST=host).status_code == 200
    tenant.status = TenantStatus.SUSPENDED
    tenant.save()
    assert client.get("/", HTTP_HOST=host).status_code == 403


def test_renamed_and_deleted_domains_are_forgotten(unique) -> None:
    tenant = make_tenant(f"d{unique}")
    old, new = f"d{unique}.localhost", f"d{unique}-new.localhost"
    assert resolve_tenant(old) is not None
    domain = Domain.objects.get(domain=old)
    domain.domain = new
    domain.save()
    assert resolve_tenant(old) is None
    assert resolve_tenant(new).pk == tenant.pk  # type: ignore[union-attr]
    domain.delete()
    assert resolve_tenant(new) is None


def test_creating_a_tenant_asks_for_no_domains_to_forget(unique) -> None:
    from tenants.models import Tenant

    with CaptureQueriesContext(connection) as captured:
        Tenant.objects.create(name="N", slug=f"n{unique}", schema_name=f"t_n{unique}")
    assert [q["sql"] for q in captured.captured_queries if "tenants_domain" in q["sql"]] == []


def test_a_bulk_suspend_is_seen_within_the_epoch_check(client, unique, settings) -> None:
    """QuerySet.update() sends no signal; the epoch trigger moves, so the entry is left unread."""
    from tenants.models import Tenant

    make_tenant(f"b{unique}")
    host = f"b{unique}.localhost"
    assert client.get("/", HTTP_HOST=host).status_code == 200
    settings.CACHE_EPOCH_CHECK_SECONDS = 0
    Tenant.objects.filter(slug=f"b{unique}").update(status=TenantStatus.SUSPENDED)
    assert client.get("/", HTTP_HOST=host).status_code == 403


def test_a_fanout_revisions_update_leaves_the_epoch_alone(unique, settings) -> None:
    from tenants.cache_epoch import current_epoch
    from tenants.models import Tenant

    make_tenant(f"v{unique}")
    settings.CACHE_EPOCH_CHECK_SECONDS = 0
    before = current_epoch()
    Tenant.objects.filter(slug=f"v{unique}").update(revisions={"taskflow": "x"})
    assert current_epoch() == before


def test_the_cache_refills_after_a_tenant_save(
    client, unique, settings, django_capture_on_commit_callbacks
) -> None:
    """A save tombstones the tenant's hosts; once it has committed, the first request reads the
    database and caches what it read, and the next one is a hit again (not one per request for
    the tombstone's whole life). The epoch check is 0: the save's new epoch is seen at once."""
    settings.CACHE_EPOCH_CHECK_SECONDS = 0
    tenant = make_tenant(f"r{unique}")
    host = f"r{unique}.localhost"
    assert tenant_table_queries(client, host) != []
    assert tenant_table_queries(client, host) == []
    with django_capture_on_commit_callbacks(execute=True):  # the save commits
        tenant.name = "Renamed"
        tenant.save()
    assert tenant_table_queries(client, host) != []  # forgotten: read again
    assert tenant_table_queries(client, host) == []  # and cached again


def test_an_entry_a_slow_reader_writes_after_a_change_is_not_read(
    client, unique, django_capture_on_commit_callbacks
) -> None:
    """A request that read the tenant before a suspend and writes its entry after the suspend
    committed (stamped with what it saw then: no tombstone) leaves nothing that is served."""
    from django.core.cache import cache

    from tenants.cache_epoch import current_epoch
    from tenants.resolution import _key

    tenant = make_tenant(f"w{unique}")
    host = f"w{unique}.localhost"
    assert client.get("/", HTTP_HOST=host).status_code == 200
    key = _key(host, current_epoch())
    before = cache.get(key)
    assert before is not None
    with django_capture_on_commit_callbacks(execute=True):
        tenant.status = TenantStatus.SUSPENDED
        tenant.save()
    cache.set(key, before, 300)  # the slow reader's late write, under the epoch it read
    assert client.get("/", HTTP_HOST=host).status_code == 403
    assert client.get("/", HTTP_HOST=host).status_code == 403


def long_host(unique: str, length: int) -> str:
    """A valid host name under .localhost of `length` characters (labels of at most 63)."""
    labels = [unique]
    while sum(len(label) + 1 for label in labels) + len("localhost") < length:
        labels.append(
            "a" * min(63, length - sum(len(x) + 1 for x in labels) - len("localhost") - 1)
        )
    host = ".".join([*labels, "localhost"])
    assert len(host) == length
    return host


def test_a_host_is_its_own_key_part_unless_long_or_unsafe() -> None:
    assert key_part("acme.localhost") == "acme.localhost"
    assert key_part("[::1]:8000") == "[::1]:8000"
    hashed = key_part("a" * 201)
    assert hashed.startswith("sha256-")
    assert len(hashed) == 71
    assert key_part("a b") != key_part("a_b")
    assert key_part("a b").startswith("sha256-")
    assert key_part("é.localhost").startswith("sha256-")


def test_a_long_host_header_makes_no_cache_key_over_the_limit(client, unique) -> None:
    """A Host header is the client's: a fuzzed or hostile one of any length that ALLOWED_HOSTS
    lets through must not build a cache key caches refuse (CacheKeyWarning, over 250)."""
    host = long_host(unique, 250)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert client.get("/", HTTP_HOST=host).status_code == 404  # unknown host
    assert [w for w in caught if issubclass(w.category, CacheKeyWarning)] == []


def test_a_tenant_with_a_long_domain_is_cached_and_forgotten(client, unique, settings) -> None:
    settings.CACHE_EPOCH_CHECK_SECONDS = 60  # the epoch's once-a-second read is not resolution's
    host = long_host(unique, 240)
    tenant = make_tenant(f"l{unique}", domain=host)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert tenant_table_queries(client, host) != []  # cold
        assert tenant_table_queries(client, host) == []  # warm: cached under its digest
        tenant.status = TenantStatus.SUSPENDED
        tenant.save()  # forgets the host under the same key
        assert client.get("/", HTTP_HOST=host).status_code == 403
    assert [w for w in caught if issubclass(w.category, CacheKeyWarning)] == []

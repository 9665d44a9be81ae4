"""What the tenant list shows an operator: where rows live, revisions behind the head, the
control-plane tenant kept out of lifecycle actions, and the run form without a selection."""

from __future__ import annotations

import pytest
from django.test import Client

from control_plane.tenancy.tenant_columns import head_revision, human_bytes
from tenants.models import Isolation, Tenant
from tests.control_plane.admin_support import HOST, reverse
from tests.factories import make_tenant

pytestmark = pytest.mark.django_db


def listing(operator: Client, query: str = "") -> str:
    response = operator.get(reverse("admin:tenants_tenant_changelist") + query, HTTP_HOST=HOST)
    assert response.status_code == 200
    return response.content.decode()


def row_of(page: str, slug: str) -> str:
    start = page.index(f">{slug}<")
    return page[page.rindex("<tr", 0, start) : page.index("</tr>", start)]


def test_rls_tenants_show_shared_and_schema_tenants_their_schema(
    operator: Client, unique: str
) -> None:
    pooled = make_tenant(f"r{unique}", isolation=Isolation.RLS)
    own = make_tenant(f"s{unique}")
    page = listing(operator, f"?q={unique}")
    assert '<td class="field-placement">shared</td>' in row_of(page, pooled.slug)
    assert f'<td class="field-placement">{own.schema_name}</td>' in row_of(page, own.slug)


def test_lagging_tenants_are_marked_and_filtered(operator: Client, unique: str) -> None:
    behind = make_tenant(f"b{unique}")
    current = make_tenant(f"c{unique}")
    Tenant.objects.filter(pk=behind.pk).update(revisions={"alembic": "0001"})
    Tenant.objects.filter(pk=current.pk).update(revisions={"alembic": head_revision()})
    page = listing(operator, f"?q={unique}")
    assert "0001 (behind)" in row_of(page, behind.slug)
    assert "(behind)" not in row_of(page, current.slug)
    lagging = listing(operator, f"?q={unique}&revision=behind")
    assert behind.slug in lagging
    assert current.slug not in lagging
    at_head = listing(operator, f"?q={unique}&revision=head")
    assert current.slug in at_head
    assert behind.slug not in at_head


def test_the_control_plane_tenant_cannot_be_ticked_for_an_action(operator: Client) -> None:
    public = Tenant.objects.get(schema_name="public")
    page = listing(operator, f"?q={public.slug}")
    row = row_of(page, public.slug)
    assert 'class="action-select"' not in row
    assert "- (control plane)" in row


def test_migrate_all_tenants_needs_no_selection_and_offers_the_strategy(operator: Client) -> None:
    page = listing(operator)
    assert 'id="migrate-all-tenants"' in page
    form = operator.get(reverse("admin:tenants_tenant_migrate"), HTTP_HOST=HOST)
    assert form.status_code == 200
    body = form.content.decode()
    assert "Migrate all tenants" in body
    for field in ("to", "canary", "concurrency", "batch_size", "max_failures"):
        assert f'name="{field}"' in body
    refused = operator.post(
        reverse("admin:tenants_tenant_migrate"),
        {"to": "no-such-rev", "canary": "1", "concurrency": "2", "batch_size": "50",
         "max_failures": "0"},
        HTTP_HOST=HOST,
    )  # fmt: skip
    assert refused.status_code == 200
    assert "no revision &#x27;no-such-rev&#x27;" in refused.content.decode()


def test_sizes_read_at_a_glance() -> None:
    assert [human_bytes(n) for n in (512, 1_234, 1_234_567, 9_876_543_210)] == [
        "512 B",
        "1.2 kB",
        "1.2 MB",
        "9.9 GB",
    ]

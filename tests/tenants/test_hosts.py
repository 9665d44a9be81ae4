"""Host names: the one normalisation onboarding and routing share."""

from __future__ import annotations

import pytest

from tenants.hosts import is_valid_hostname, normalise_host, routable, routing_host


@pytest.mark.parametrize(
    ("given", "stored"),
    [("sa.localhost", "sa.localhost"), (" SA.LocalHost. ", "sa.localhost"), ("x.io..", "x.io")],
)
def test_normalise_host(given: str, stored: str) -> None:
    assert normalise_host(given) == stored


@pytest.mark.parametrize(
    ("header", "domain"),
    [
        ("sa.localhost", "sa.localhost"),
        ("SA.localhost.:8000", "sa.localhost"),
        ("www.sa.localhost", "sa.localhost"),
        ("WWW.SA.LOCALHOST.", "sa.localhost"),
        ("wwwsa.localhost", "wwwsa.localhost"),
        ("127.0.0.1:8000", "127.0.0.1"),
    ],
)
def test_routing_host_is_the_domain_a_request_reaches(header: str, domain: str) -> None:
    assert routing_host(header) == domain


def test_only_names_served_as_themselves_are_routable() -> None:
    assert routable("sa.localhost")
    assert routable("wwwsa.localhost")
    assert not routable("www.sa.localhost")


@pytest.mark.parametrize("name", ["localhost", "a.b", "x-1.example.com"])
def test_valid_hostnames(name: str) -> None:
    assert is_valid_hostname(name)


@pytest.mark.parametrize("name", ["", "nodot", "-a.b", "a_b.c", "a b.c", "x" * 64 + ".io"])
def test_invalid_hostnames(name: str) -> None:
    assert not is_valid_hostname(name)

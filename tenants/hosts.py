"""Host names as the platform stores and serves them: one normalisation for onboarding and routing.

An onboarding's domain and a request's Host header meet in the Domain table, so both go through
`normalise_host`: no surrounding whitespace, lowercase, no trailing dot (the DNS root, which a Host
header may carry). A request is routed by `routing_host`: its Host header without the port,
normalised, and without a leading `www.`, as django-tenants has always routed (`www.x` serves
`x`). So a `www.` name can never be served as itself: onboarding refuses it (`routable`) rather
than accept a tenant nobody can reach. Never touches the database.
"""

from __future__ import annotations

import re

from django.http.request import split_domain_port

WWW_PREFIX = "www."
HOSTNAME_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")


def normalise_host(name: str) -> str:
    """`name` as the Domain table holds it: stripped, lowercase, without a trailing dot."""
    return name.strip().lower().rstrip(".")


def routing_host(host_header: str) -> str:
    """The Domain a request with this Host header is served by (its port and `www.` dropped)."""
    host, _port = split_domain_port(host_header.strip())
    host = normalise_host(host)
    return host[len(WWW_PREFIX) :] if host.startswith(WWW_PREFIX) else host


def is_valid_hostname(name: str) -> bool:
    """A DNS host name of letters, digits and hyphens (or `localhost`), already normalised."""
    if not name or len(name) > 253 or ("." not in name and name != "localhost"):
        return False
    return all(HOSTNAME_LABEL.match(label) for label in name.split("."))


def routable(name: str) -> bool:
    """Whether requests for the normalised `name` are routed to `name` itself."""
    return routing_host(name) == name

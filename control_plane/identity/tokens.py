"""API token secrets: made once, shown once, stored only as a hash with a lookup prefix."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

from django.conf import settings

TOKEN_PREFIX = "tf"  # noqa: S105 - the visible scheme marker of every token, not a secret
PREFIX_LENGTH = 10


@dataclass(frozen=True)
class TokenSecret:
    """The plaintext token, its lookup prefix and the hash that is stored."""

    value: str
    prefix: str
    digest: str


def _make(prefix: str, body: str) -> TokenSecret:
    value = f"{TOKEN_PREFIX}_{prefix}_{body}"
    return TokenSecret(value=value, prefix=prefix, digest=token_digest(value))


def new_token_secret() -> TokenSecret:
    return _make(secrets.token_hex(PREFIX_LENGTH // 2), secrets.token_urlsafe(32))


def derived_token_secret(purpose: str) -> TokenSecret:
    """A secret derived from SECRET_KEY and `purpose`, so an idempotent retry can show it again."""
    key = hmac.new(settings.SECRET_KEY.encode(), purpose.encode(), hashlib.sha256).hexdigest()
    return _make(key[:PREFIX_LENGTH], key[PREFIX_LENGTH:])


def token_digest(value: str) -> str:
    """SHA-256 suffices: the secret is 256 random bits, not a password a person chose."""
    return hashlib.sha256(value.encode()).hexdigest()


HEX_DIGITS = frozenset("0123456789abcdef")


def parse_prefix(value: str) -> str | None:
    """The lookup prefix of a token as made here (hex), or None: nothing else reaches a query."""
    parts = value.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(parts[1]) != PREFIX_LENGTH:
        return None
    if not set(parts[1]) <= HEX_DIGITS:
        return None
    return parts[1]


def digests_match(value: str, digest: str) -> bool:
    return hmac.compare_digest(token_digest(value), digest)

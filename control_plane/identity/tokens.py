"""API token secrets: made once, shown once, stored only as a hash with a lookup prefix.

A token is random: nothing, SECRET_KEY included, can compute it again. The one exception to
"shown once" is an idempotent retry shortly after: the plaintext may be kept sealed (Fernet,
keyed from SECRET_KEY and the purpose) in an expiring record, and opened only within its window.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from cryptography.fernet import Fernet, InvalidToken
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


def _fernet(purpose: str) -> Fernet:
    """A key per purpose: a record sealed for one idempotency key opens for no other."""
    key = hmac.new(
        settings.SECRET_KEY.encode(), b"sealed-token:" + purpose.encode(), hashlib.sha256
    ).digest()
    return Fernet(base64.urlsafe_b64encode(key))


def seal_token(value: str, purpose: str) -> bytes:
    """`value` encrypted and authenticated, with the time it was sealed."""
    return _fernet(purpose).encrypt(value.encode())


def unseal_token(sealed: bytes, purpose: str, *, max_age_seconds: int) -> str | None:
    """The token sealed for `purpose` at most `max_age_seconds` ago, else None."""
    try:
        return _fernet(purpose).decrypt(sealed, ttl=max_age_seconds).decode()
    except InvalidToken:
        return None


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

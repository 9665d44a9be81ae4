"""Driving the operators' admin from tests: public-host URLs, flash messages, list actions."""

from __future__ import annotations

import re
from typing import Any

from django.conf import settings
from django.contrib.messages import get_messages
from django.test import Client
from django.urls import reverse as django_reverse

HOST = "localhost"
TOKEN = re.compile(r'<code id="new-api-token">(tf_[0-9a-f]{10}_[A-Za-z0-9_-]+)</code>')


def reverse(name: str, args: list[Any] | None = None) -> str:
    """A URL of the public host's URLConf (the tests' default URLConf is the tenant one)."""
    return django_reverse(name, args=args, urlconf=settings.PUBLIC_SCHEMA_URLCONF)


def texts(response: Any) -> list[str]:
    return [str(m) for m in get_messages(response.wsgi_request)]


def run_action(client: Client, model: str, action: str, *pks: int, **extra: str) -> Any:
    """Post a list action for rows `pks`; `extra` adds fields (a confirmation, a reason)."""
    return client.post(
        reverse(f"admin:{model}_changelist"),
        {"action": action, "_selected_action": [str(pk) for pk in pks], **extra},
        HTTP_HOST=HOST,
        follow=True,
    )

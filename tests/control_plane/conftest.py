"""Fixtures of the control plane's tests."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import User
from django.test import Client


@pytest.fixture
def operator(client: Client, unique: str) -> Client:
    """A client signed in as a superuser (made here: the admin_client fixture knows no tenants)."""
    user = User.objects.create_superuser(f"op_{unique}", f"op_{unique}@example.com", "unused")
    client.force_login(user)
    return client

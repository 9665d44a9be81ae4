"""`manage.py api_contract --write|--check`: the committed OpenAPI documents and changelog."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from control_plane.http import contract


class Command(BaseCommand):
    help = (
        "Regenerate (--write) or check (--check) openapi/tenant-v1.yaml, openapi/ops-v1.yaml and "
        "openapi/CHANGELOG.md; --check fails on a stale copy or a breaking change."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        mode = parser.add_mutually_exclusive_group(required=True)
        mode.add_argument("--write", action="store_true")
        mode.add_argument("--check", action="store_true")

    def handle(self, *args: Any, write: bool, check: bool, **options: Any) -> None:
        if write:
            for line in contract.write() or ["the contract is up to date"]:
                self.stdout.write(line)
            return
        problems = contract.check()
        if problems:
            raise CommandError("\n".join(problems))
        self.stdout.write("the committed API contract matches the code")

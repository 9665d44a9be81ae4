"""The contract run's failure filter drops only what no correct API could avoid."""

from __future__ import annotations

from types import SimpleNamespace

from tests.contract.schemathesis_hooks import filter_failure

ITEM_ENUM = (
    "Invalid data should have been rejected\\nInvalid component: parameter `status` in query"
    " - violates `enum` at /properties/status/items"
)


def accepted(query: dict[str, object], message: str = ITEM_ENUM) -> bool:
    failure = SimpleNamespace(code="ST201", message=message)
    case = SimpleNamespace(query=query)
    return filter_failure(None, failure, case, SimpleNamespace(status_code=200))


def test_a_list_of_one_empty_item_is_the_empty_list_on_the_wire() -> None:
    assert accepted({"status": [""]}) is False  # dropped: `?status=` is also the valid []
    assert accepted({"status": ""}) is False


def test_any_other_accepted_negative_case_is_kept() -> None:
    assert accepted({"status": ["bogus"]}) is True
    assert accepted({"status": ["", "done"]}) is True
    other = ITEM_ENUM.replace("status", "project")
    assert accepted({"status": [""], "project": "x"}, other) is True
    assert accepted({"q": ""}, "violates `maxLength` at /properties/q") is True

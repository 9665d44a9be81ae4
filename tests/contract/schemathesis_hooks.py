"""schemathesis hooks of the contract tests, loaded by `schemathesis run` (SCHEMATHESIS_HOOKS).

Nothing here hides a server error or a response the description does not allow: the hook
drops only failures no correct API could avoid.
"""

from __future__ import annotations

import json
from typing import Any

import schemathesis


@schemathesis.hook
def filter_failure(context: Any, failure: Any, case: Any, response: Any) -> bool:
    """Keep every failure except "schema-valid request rejected" for a made-up cursor, and
    "schema-violating request accepted" for a list parameter that is empty on the wire.

    Kept on purpose (decided with issue #13): a cursor is a capability, like a bearer token.
    The description gives its exact form (`cursor`'s pattern: payload and HMAC in base64url) and
    says it must come from a page's `next`/`previous` link; which values of that form are valid
    depends on the server's secret, which no schema can state and no fuzzer can meet. So a
    fuzzed cursor of the right form is rightly a 400 "Invalid cursor" (schemathesis itself exempts
    credential refusals by token endpoints the same way). Narrowly: only that check, only a 400
    whose problem title is "Invalid cursor", only for a request that sent a cursor; a cursor of
    the wrong form is negative data and checked as such, and real cursors are walked page by
    page by tests/contract/test_generated_client.py and tests/taskflow/test_pagination.py.
    """
    if failure.code == "ST201":
        return not _an_empty_list_on_the_wire(failure, case)
    if (
        failure.code != "ST202"
        or response.status_code != 400
        or not (case.query or {}).get("cursor")
    ):
        return True
    try:
        title = json.loads(response.content).get("title")
    except ValueError:
        return True
    return bool(title != "Invalid cursor")


def _an_empty_list_on_the_wire(failure: Any, case: Any) -> bool:
    """Whether the "invalid" value was a list of one empty string, sent as `name=`.

    A comma-separated list (style form, explode false) of one empty item and the empty list
    are the same bytes, `?status=`; the empty list is valid (no minItems: it filters nothing,
    as `?q=` does), so the server cannot tell the "negative" case from a positive one. Only
    when the failure's invalid component is an item of that very parameter.
    """
    message = str(getattr(failure, "message", ""))
    for name, value in (case.query or {}).items():
        if value in ([""], "") and f"/properties/{name}/items" in message:
            return True
    return False

"""The refusal memo: a client being refused is refused again by this process, without asking
Redis, until the moment the limiter would let it in.

A client over its limit usually keeps sending; each refusal asked of Redis is a round trip spent
on a request that will be refused anyway. When the limiter refuses a set of limits, the memo
keeps the refusal until `asked_at + retry_after`, where `asked_at` is this process's monotonic
clock read *before* the script was sent. Redis computed retry_after from its own clock at the
moment the script ran, which is not before `asked_at`, so the memo's end is never later than
the moment the limiter would first allow the request again: the memo never refuses a request
the limiter would let in. That moment only moves later while the memo stands (a refusal charges
nothing; other requests can only charge more), and a changed quota or window is another memo key.
Retry-After's whole seconds (rounded up) are for the client only, never the memo's end.

It is per process and bounded (MAX_ENTRIES); it never lets a request in (an allowed request is
always asked of Redis), and it forgets a refusal the moment its window ends.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import replace

from control_plane.ratelimits.limiter import Decision, Limit

MAX_ENTRIES = 10_000
MemoKey = tuple[tuple[str, int, int], ...]


def memo_key(limits: Sequence[Limit]) -> MemoKey:
    """The limits a refusal was decided under: their keys, quotas and windows."""
    return tuple((limit.key, limit.quota, limit.window) for limit in limits)


class RefusalMemo:
    """Refusals this process answered, each until the limiter would allow the request again."""

    def __init__(self, max_entries: int = MAX_ENTRIES) -> None:
        self.max_entries = max_entries
        # key -> (until, the refusal, when it was asked), monotonic seconds
        self._entries: dict[MemoKey, tuple[float, Decision, float]] = {}
        self._lock = threading.Lock()

    def refusal(self, limits: Sequence[Limit], now: float | None = None) -> Decision | None:
        """The remembered refusal of these limits, as it stands `now`; None once it has ended."""
        if not self._entries:  # no refusal standing: no key to build
            return None
        key = memo_key(limits)
        entry = self._entries.get(key)
        if entry is None:
            return None
        until, decision, asked_at = entry
        now = time.monotonic() if now is None else now
        if now >= until:
            self._entries.pop(key, None)
            return None
        elapsed = now - asked_at
        states = tuple(replace(s, reset=max(0.0, s.reset - elapsed)) for s in decision.states)
        return replace(decision, retry_after=until - now, states=states)

    def remember(self, limits: Sequence[Limit], decision: Decision, asked_at: float) -> None:
        """Keep a refusal the limiter answered to a check sent at `asked_at` (monotonic)."""
        if decision.allowed or not decision.enforced or decision.retry_after <= 0:
            return
        with self._lock:
            if len(self._entries) >= self.max_entries:
                self._forget_ended(time.monotonic())
            if len(self._entries) >= self.max_entries:  # all still standing: drop the oldest
                del self._entries[next(iter(self._entries))]
            self._entries[memo_key(limits)] = (asked_at + decision.retry_after, decision, asked_at)

    def _forget_ended(self, now: float) -> None:
        # list() copies in one step: refusal() pops without the lock.
        for key, (until, _, _) in list(self._entries.items()):
            if until > now:
                continue
            self._entries.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


REFUSALS = RefusalMemo()

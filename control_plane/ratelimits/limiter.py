"""An atomic GCRA rate limiter in Redis: several limits checked, and charged together, in one
round trip.

GCRA (the generic cell rate algorithm) keeps one number per limit, the "theoretical arrival
time" (TAT): a limit of `quota` requests per `window` seconds lets a request in when
TAT - window <= now, and moves TAT on by window / quota. That is a token bucket of `quota`
tokens refilled continuously, stored in one key, with no background refill and no list of
timestamps (a moving window costs one list entry per request in the window).

One Lua script checks every limit a request falls under (its tenant's, its token's) and charges
all of them only if all let it in: a request refused by its token's limit takes nothing from its
tenant's. The clock is Redis's (TIME), so web processes on several hosts agree on it.

Why not the `limits` library: it has no GCRA, its moving window stores a timestamp per request,
and it checks one limit per round trip; two limits charged atomically is the point here.

Redis holds no durable state for this, so it must never take a request down: the script runs on
the cache's pooled client with its short socket timeouts and shares its circuit breaker
(control_plane.http.redis_cache). Unreachable or hung, a check fails open — the request goes on,
unlimited — and the metric `taskflow_rate_limit_fail_open_total` counts how often, by reason.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache

from control_plane.http.redis_cache import UNREACHABLE
from control_plane.observability import metrics

logger = logging.getLogger(__name__)
# Why a check let a request in unchecked (the metric's `reason` label).
UNREACHABLE_REASON = "unreachable"
BREAKER_OPEN = "breaker_open"

# KEYS: one per limit. ARGV: cost, commit (1 to charge), then per key: interval_us, tolerance_us.
# Returns {allowed, retry_after_us, then per key: remaining, reset_us}.
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local cost = tonumber(ARGV[1])
local commit = tonumber(ARGV[2])
local allowed = 1
local retry = 0
local tats = {}
local out = {}
for i, key in ipairs(KEYS) do
  local interval = tonumber(ARGV[1 + 2 * i])
  local tolerance = tonumber(ARGV[2 + 2 * i])
  local tat = tonumber(redis.call('GET', key) or 0)
  if tat < now then tat = now end
  local new_tat = tat + interval * cost
  local allow_at = new_tat - tolerance
  if allow_at > now then
    allowed = 0
    if allow_at - now > retry then retry = allow_at - now end
    new_tat = tat
  end
  tats[i] = new_tat
  out[2 * i - 1] = math.max(0, math.floor((tolerance - (new_tat - now)) / interval))
  out[2 * i] = new_tat - now
end
if allowed == 1 and commit == 1 then
  for i, key in ipairs(KEYS) do
    redis.call('SET', key, tats[i], 'PX', math.max(1, math.ceil((tats[i] - now) / 1000)))
  end
end
local result = {allowed, retry}
for _, v in ipairs(out) do table.insert(result, v) end
return result
"""


@dataclass(frozen=True)
class Limit:
    """`quota` requests per `window` seconds, under `key` in Redis; `name` is what headers show."""

    name: str
    key: str
    quota: int
    window: int


@dataclass(frozen=True)
class LimitState:
    limit: Limit
    remaining: int
    reset: float  # seconds until the limit is back to its full quota


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after: float  # seconds; 0 when allowed
    states: tuple[LimitState, ...]
    enforced: bool = True  # False: Redis could not be asked, the request was let in (fail open)

    @property
    def tightest(self) -> LimitState | None:
        """The limit closest to refusing: the one the RateLimit header reports."""
        return min(self.states, key=lambda s: (s.remaining, -s.reset), default=None)


_scripts: dict[int, Any] = {}


def _script(client: Any) -> Any:
    script = _scripts.get(id(client))
    if script is None:
        script = _scripts[id(client)] = client.register_script(GCRA_SCRIPT)
    return script


def check(limits: list[Limit], *, cost: int = 1, commit: bool = True) -> Decision:
    """Let a request in under every one of `limits` (charging each `cost` when `commit`), or not.

    `commit=False` asks without charging: would one more request be let in?
    """
    if not limits:
        return Decision(True, 0.0, ())
    breaker = getattr(cache, "breaker", None)
    if breaker is not None and breaker.tripped and not breaker.may_probe():
        return _fail_open(limits, None, BREAKER_OPEN)
    args: list[int] = [cost, 1 if commit else 0]
    for limit in limits:
        interval = limit.window * 1_000_000 // max(limit.quota, 1)
        args += [interval, interval * limit.quota]
    try:
        client = cache._cache.get_client(write=True)  # type: ignore[attr-defined]
        reply = _script(client)(keys=[limit.key for limit in limits], args=args)
    except UNREACHABLE as exc:
        if breaker is not None:
            breaker.trip(exc)
        return _fail_open(limits, exc, UNREACHABLE_REASON)
    if breaker is not None and breaker.tripped:
        breaker.recover()
    allowed, retry_us, *rest = (int(v) for v in reply)
    states = tuple(
        LimitState(limit, rest[2 * i], rest[2 * i + 1] / 1_000_000)
        for i, limit in enumerate(limits)
    )
    return Decision(bool(allowed), retry_us / 1_000_000, states)


def _fail_open(limits: list[Limit], exc: BaseException | None, reason: str) -> Decision:
    metrics.rate_limit_failed_open(reason)
    if exc is not None:
        logger.warning("rate limits not enforced: Redis unreachable (%s)", exc)
    states = tuple(LimitState(limit, limit.quota, 0.0) for limit in limits)
    return Decision(True, 0.0, states, enforced=False)


def retry_after_seconds(decision: Decision) -> int:
    """Whole seconds for Retry-After: never 0 for a refusal."""
    return max(1, math.ceil(decision.retry_after))

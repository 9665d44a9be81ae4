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

The same script can first read cache keys, and charge only if the first of them still hold the
values the caller expects: a warm request's tenant and principal are read, and its limits
charged, in one round trip (control_plane.ratelimits.prepaid, read_and_check).

Why not the `limits` library: it has no GCRA, its moving window stores a timestamp per request,
and it checks one limit per round trip; two limits charged atomically is the point here.

Redis holds no durable state for this, so it must never take a request down: the script is sent
packed, on a connection made with the cache's options and its short socket timeouts
(control_plane.http.redis_wire), and shares its circuit breaker
(control_plane.http.redis_cache). Unreachable or hung, a check fails open — the request goes on,
unlimited — and the metric `taskflow_rate_limit_fail_open_total` counts how often, by reason.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Any

from django.core.cache import cache
from redis.exceptions import NoScriptError

from control_plane.http.redis_cache import UNREACHABLE
from control_plane.http.redis_wire import Wire, pack
from control_plane.observability import metrics

logger = logging.getLogger(__name__)
# Why a check let a request in unchecked (the metric's `reason` label).
UNREACHABLE_REASON = "unreachable"
BREAKER_OPEN = "breaker_open"

# KEYS: ARGV[1] cache keys to read, then one key per limit.
# ARGV: reads, expected, then the values the first `expected` reads are expected to hold ('' for
# none), then cost, commit (1 to charge), then per limit: interval_us, tolerance_us.
# The limits are checked (and charged) only when every expected value holds: a caller that
# chose its limits from values it read earlier charges only if they are still what Redis holds.
# Returns {numbers, then the values read (nil: none)}, where numbers is one string of integers
# separated by spaces: checked, allowed, retry_after_us, then per limit (when checked)
# remaining, reset_us. One bulk string, not one reply element per number: the client parses
# each element of a reply in Python, and split() and int() are cheaper.
GCRA_SCRIPT = """
local function int(v)
  if v ~= v then return '0' end
  if v > 9007199254740992 then v = 9007199254740992 end
  if v < -9007199254740992 then v = -9007199254740992 end
  return string.format('%d', v)
end
local reads = tonumber(ARGV[1])
local expected = tonumber(ARGV[2])
local values = {}
local checked = 1
for i = 1, reads do
  local v = redis.call('GET', KEYS[i])
  values[i] = v
  if i <= expected and (v or '') ~= ARGV[2 + i] then checked = 0 end
end
local base = 2 + expected
local result = {checked, 1, 0}
if checked == 1 and #KEYS > reads then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local cost = tonumber(ARGV[base + 1])
  local commit = tonumber(ARGV[base + 2])
  local allowed = 1
  local retry = 0
  local tats = {}
  local out = {}
  for i = reads + 1, #KEYS do
    local j = i - reads
    local interval = tonumber(ARGV[base + 1 + 2 * j])
    local tolerance = tonumber(ARGV[base + 2 + 2 * j])
    local tat = tonumber(redis.call('GET', KEYS[i]) or 0)
    if tat < now then tat = now end
    local new_tat = tat + interval * cost
    local allow_at = new_tat - tolerance
    if allow_at > now then
      allowed = 0
      if allow_at - now > retry then retry = allow_at - now end
      new_tat = tat
    end
    tats[j] = new_tat
    out[2 * j - 1] = math.max(0, math.floor((tolerance - (new_tat - now)) / interval))
    out[2 * j] = new_tat - now
  end
  if allowed == 1 and commit == 1 then
    for j, tat in ipairs(tats) do
      redis.call('SET', KEYS[reads + j], tat, 'PX', math.max(1, math.ceil((tat - now) / 1000)))
    end
  end
  result[2] = allowed
  result[3] = retry
  for _, v in ipairs(out) do result[#result + 1] = v end
end
for i, v in ipairs(result) do result[i] = int(v) end
local reply = {table.concat(result, ' ')}
for i = 1, reads do reply[i + 1] = values[i] end
return reply
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


# The name Redis knows the script by (EVALSHA).
SCRIPT_SHA = hashlib.sha1(GCRA_SCRIPT.encode(), usedforsecurity=False).hexdigest()


def script_command(
    keys: list[str],
    expected: list[bytes],
    limits: list[Limit],
    *,
    cost: int = 1,
    commit: bool = True,
) -> bytes:
    """The EVALSHA that reads the Redis keys `keys` (stored names) and checks (and charges)
    `limits` when the first reads hold `expected` (b"": absent), packed: a caller whose command
    does not change from one request to the next keeps the bytes
    (control_plane.ratelimits.prepaid)."""
    args: list[Any] = [len(keys), len(expected), *expected, cost, 1 if commit else 0]
    for limit in limits:
        interval = limit.window * 1_000_000 // max(limit.quota, 1)
        args += [interval, interval * limit.quota]
    stored = [*keys, *(limit.key for limit in limits)]
    return pack(b"EVALSHA", SCRIPT_SHA, len(stored), *stored, *args)


def run_script(wire: Wire, command: bytes) -> Any:
    """The script's reply; loaded first when this Redis does not know it (a restart, a flush)."""
    try:
        return wire.call(command)
    except NoScriptError:
        wire.call(pack(b"SCRIPT", b"LOAD", GCRA_SCRIPT))
        return wire.call(command)


def check(limits: list[Limit], *, cost: int = 1, commit: bool = True) -> Decision:
    """Let a request in under every one of `limits` (charging each `cost` when `commit`), or not.

    `commit=False` asks without charging: would one more request be let in?
    """
    if not limits:
        return Decision(True, 0.0, ())
    breaker = getattr(cache, "breaker", None)
    if breaker is not None and breaker.tripped and not breaker.may_probe():
        return _fail_open(limits, None, BREAKER_OPEN)
    try:
        command = script_command([], [], limits, cost=cost, commit=commit)
        _, decision = read_and_check(cache.wire(), 0, command, limits)  # type: ignore[attr-defined]
    except UNREACHABLE as exc:
        if breaker is not None:
            breaker.trip(exc)
        return _fail_open(limits, exc, UNREACHABLE_REASON)
    if breaker is not None and breaker.tripped:
        breaker.recover()
    assert decision is not None  # nothing was expected, so the limits were checked
    return decision


def read_and_check(
    wire: Wire, reads: int, command: bytes, limits: list[Limit]
) -> tuple[list[bytes | None], Decision | None]:
    """Run `command` (script_command's, reading `reads` keys, for `limits`) in one round trip:
    the values read (None: absent), and the decision, or None when the first reads did not hold
    what was expected and nothing was checked or charged. Raises what the client raises (the
    caller decides how to fail open)."""
    reply = run_script(wire, command)
    values: list[bytes | None] = reply[1:]
    numbers = reply[0].split()
    if numbers[0] == b"0":
        return values, None
    states = tuple(
        LimitState(limit, int(numbers[3 + 2 * i]), int(numbers[4 + 2 * i]) / 1_000_000)
        for i, limit in enumerate(limits)
    )
    return values, Decision(numbers[1] == b"1", int(numbers[2]) / 1_000_000, states)


def _fail_open(limits: list[Limit], exc: BaseException | None, reason: str) -> Decision:
    metrics.rate_limit_failed_open(reason)
    if exc is not None:
        logger.warning("rate limits not enforced: Redis unreachable (%s)", exc)
    states = tuple(LimitState(limit, limit.quota, 0.0) for limit in limits)
    return Decision(True, 0.0, states, enforced=False)


def retry_after_seconds(decision: Decision) -> int:
    """Whole seconds for Retry-After: never 0 for a refusal."""
    return max(1, math.ceil(decision.retry_after))

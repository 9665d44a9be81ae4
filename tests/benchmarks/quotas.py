"""Rate-limit quotas for benchmarks that keep the limiter on without measuring its refusals."""

from __future__ import annotations

# Quotas no run reaches: with limits on, every request is checked and charged, none refused.
UNREACHABLE_PLANS = {
    plan: dict.fromkeys(("reads", "writes", "imports", "exports"), 10**9)
    for plan in ("free", "standard", "enterprise")
}

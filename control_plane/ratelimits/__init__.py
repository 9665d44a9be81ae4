"""Protection from noisy neighbours at the HTTP edge: per-tenant and per-token rate limits by plan,
and a limit on failed authentication per client address (see limiter.py for the algorithm)."""

"""Benchmark-only Django pieces for tests.benchmarks.bench_taskflow_api (never used in production)."""

"""Benchmarks; results are written to docs/PERFORMANCE.md."""

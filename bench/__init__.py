"""Benchmarks of guardrail: mock upstream, load drivers, runner, engine micro-benchmark (see README.md)."""

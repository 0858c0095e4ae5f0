"""Benchmark suite: ``python -m experiments.benchmarks.run [--quick]`` (see RESULTS.md)."""

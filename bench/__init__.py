"""Benchmarks: each measures enishi next to the raw limit in the same run; none asserts time."""

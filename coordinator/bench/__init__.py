"""Benchmarks that print JSON: perf (no Ray), cluster (scaling, dispatch), quality, and the memory probe."""

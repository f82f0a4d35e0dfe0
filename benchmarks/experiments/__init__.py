"""One-question experiments behind docs/quality.md (benchmarks/README.md lists what each answered)."""

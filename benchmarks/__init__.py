"""Benchmarks: commands that measure the project and print JSON (benchmarks/README.md). Not part of the service:
the `dblocks bench ...` commands import these modules; coordinator/, workers/ and shared/ never do."""

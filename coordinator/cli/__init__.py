# ruff: noqa: I001  (the command modules are imported in the order --help lists them)
"""`dblocks`, the command line, one module per audience: `local` (plan, train, sample, eval, report), `client`
(submit, status, cancel, retrain against a service), `serve` (the service), `bench` (benchmarks). `common` holds
what they share, including the one place that builds the store and the dispatcher. Config errors exit 2 before
anything starts."""

from __future__ import annotations

from coordinator.cli.apps import app

# Each module registers its commands on `app` (in this order in --help).
from coordinator.cli import local, data, serve, client, bench  # noqa: E402, F401, I001

__all__ = ["app", "main"]


def main() -> None:
    app(prog_name="dblocks")

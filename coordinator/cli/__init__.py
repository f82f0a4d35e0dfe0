"""`dblocks`, the command line, one module per audience: `local` (plan, train, sample, eval, report), `client`
(submit, status, cancel, retrain against a service), `serve` (the service), `bench` (benchmarks). `common` holds
what they share, including the one place that builds the store and the dispatcher. Config errors exit 2 before
anything starts."""

from __future__ import annotations

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="dblocks: train a DiffusionBlocks model block by block on Ray.\n\n"
    "Example: dblocks train configs/quickstart.yaml --set train.steps_per_block=500",
)
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print JSON and write under benchmarks/results/.")
app.add_typer(bench_app, name="bench")


def main() -> None:
    app(prog_name="dblocks")


# Each module registers its commands on `app` (in this order in --help); they import `app` from here.
from coordinator.cli import local, data, serve, client, bench  # noqa: E402, F401, I001

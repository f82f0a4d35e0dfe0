"""The typer apps every command module registers on: `app` (`dblocks`) and `bench_app` (`dblocks bench`)."""

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

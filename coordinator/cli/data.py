"""`dblocks data`: look at a data source before training on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from coordinator.cli.apps import app
from coordinator.cli.common import SetOpt, fail

data_app = typer.Typer(no_args_is_help=True, help="Data sources: inspect what a folder, Parquet or NumPy source holds.")
app.add_typer(data_app, name="data")


@data_app.command("inspect")
def inspect(
    source: str,
    set_: SetOpt = None,
    grid: Annotated[Path | None, typer.Option(help="Write a PNG grid of up to 64 examples here.")] = None,
    sample: Annotated[int, typer.Option(min=1, max=100_000, help="Records decoded for range, std, speed.")] = 512,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Count, shape, channels, classes and their counts, value range and std, read throughput of a source (a folder,
    .parquet file or folder of shards, .npy/.npz; local or s3://), read exactly as training would.

    Example: dblocks data inspect s3://bucket/cifar/ --set data.test_fraction=0.1 --grid grid.png --json
    """
    from shared.config import ConfigError, parse_config
    from shared.data import DataError
    from shared.data.inspect import inspect_data

    try:
        config = parse_config({"data": {"source": source}}, set_ or [])
        report = inspect_data(config, sample=sample, grid=grid)
    except (ConfigError, DataError) as err:
        fail(str(err))
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(
        f"{report['source']} ({report['format']}): {report['num_examples']} examples ({report['num_train']} train, "
        f"{report['num_test']} test) of {report['channels']}x{report['height']}x{report['width']}, "
        f"{report['num_classes']} classes; values {report['min']:.3g}..{report['max']:.3g}, std {report['std']:.3g}; "
        f"{report['read_images_per_s']:.0f} images/s"
    )

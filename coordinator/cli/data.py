"""`dblocks data`: look at a data source before training on it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from coordinator.cli.apps import app
from coordinator.cli.common import SetOpt, fail

data_app = typer.Typer(
    no_args_is_help=True,
    help="Data sources: inspect what a folder, Parquet or NumPy source holds; encode images into VAE latents.",
)
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


@data_app.command("encode")
def encode(
    source: str,
    vae: Annotated[Path, typer.Option(help="The VAE: a diffusers AutoencoderKL folder (config.json + weights).")],
    out: Annotated[Path, typer.Option(help="The latent cache to write (a new or empty folder, or one to resume).")],
    size: Annotated[int, typer.Option(min=8, max=4096, help="Side of the square images encoded (pixels).")],
    resize: Annotated[str, typer.Option(help="center_crop (default), resize (squash) or none.")] = "center_crop",
    flip: Annotated[bool, typer.Option(help="Also encode each image's horizontal mirror, as its own record.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, max=4096, help="Images encoded at once.")] = 32,
    image_column: Annotated[str | None, typer.Option(help="Parquet image column (default image/img).")] = None,
    label_column: Annotated[str | None, typer.Option(help="Parquet / metadata label column (default label).")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Encode an image source (a folder, .parquet file or folder of shards; local or s3://) once into VAE latents,
    a folder that training reads as data.source (docs/latent.md). A killed encode resumes where it stopped when run
    again with the same arguments. On the GPU when there is one.

    Example: dblocks data encode photos/ --vae sd-vae-ft-ema/ --out latents/ --size 256 --flip
    """
    import time

    from rich.progress import Progress

    from shared.data import DataError
    from shared.latent.encode import EncodeJob, encode_source
    from shared.latent.vae import Vae

    if resize not in ("center_crop", "resize", "none"):
        fail(f"--resize {resize!r}: expected center_crop, resize or none")
    job = EncodeJob(source=source, image_size=size, resize=resize, flip=flip, batch_size=batch_size,
                    image_column=image_column, label_column=label_column)  # fmt: skip
    started = time.perf_counter()
    try:
        model = Vae.load(vae, field="--vae")
        with Progress(transient=as_json) as bar:
            task = bar.add_task("encoding", total=None)
            shown = lambda done, total: bar.update(task, completed=done, total=total)  # noqa: E731
            manifest = encode_source(job, model, out, progress=shown)
    except DataError as err:
        fail(str(err))
    seconds = time.perf_counter() - started
    size_bytes = sum(p.stat().st_size for p in out.glob("part-*.npz"))
    report = {"out": str(out), "num_records": manifest["num_records"], "shape": manifest["shape"],
              "vae_sha256": model.sha256, "seconds": seconds, "cache_bytes": size_bytes}  # fmt: skip
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    typer.echo(
        f"{out}: {report['num_records']} latents of {'x'.join(map(str, report['shape']))} ({size_bytes / 2**20:.1f} "
        f"MiB) in {seconds:.1f} s; train on it with --set data.source={out.resolve()}"
    )

"""Commands for local use on one machine: plan, train, sample, eval, report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from coordinator.cli.apps import app
from coordinator.cli.common import SetOpt, answered, client, fail, load, open_dispatcher, open_store, run_config
from coordinator.store import close_embedded
from shared.checkpoint import CheckpointError
from shared.data import DataError, data_shape
from shared.tasks import PREDICT, PROMPTS, SAMPLES_PNG, SAMPLES_TXT, TASKS


@app.command()
def plan(config: Path, set_: SetOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the block plan (noise boundaries, ranges, layers, parameters). Starts nothing.

    Example: dblocks plan configs/quickstart.yaml --set blocks.partition=uniform_log --json
    """
    from shared.plan import plan_json

    doc = plan_json(load(config, set_))
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    axis = "t" if doc.get("axis") == "t" else "sigma"  # text: masking time t (block 0 owns the most-masked slice)
    typer.echo(f"{axis} boundaries: {', '.join(f'{b:.5g}' for b in doc['boundaries'])}")
    if "t_boundaries" in doc:  # flow: the same boundaries in flow time t = sigma / (1 + sigma)
        typer.echo(f"flow t boundaries: {', '.join(f'{t:.5g}' for t in doc['t_boundaries'])}")
    if "init" in doc:
        init = doc["init"]
        typer.echo(f"starts from {init['checkpoint']} ({init['format']}, sha256 {init['sha256'][:12]})")
    for b in doc["blocks"]:
        typer.echo(
            f"block {b['index']}: {axis} [{b['sigma_lo']:.5g}, {b['sigma_hi']:.5g}] trains on "
            f"[{b['train_sigma_lo']:.5g}, {b['train_sigma_hi']:.5g}] layers {b['layers']} "
            f"params {b['num_params']:,} steps {b['steps']:,}"
        )
        if "init" in b:  # the source's layers it takes (--json lists every tensor)
            others = sum(not t.startswith("layers.") for t in b["init"]["tensors"])
            typer.echo(f"  starts from {', '.join(b['init']['layers'])} and its own copies of {others} other tensors")


@app.command()
def train(
    config: Path,
    set_: SetOpt = None,
    out: Annotated[Path | None, typer.Option(help="Run directory (default runs/<run id>).")] = None,
) -> None:
    """Train every block as its own Ray job, assemble them, write the task's artefacts (samples.png; eval.json).

    Example: dblocks train configs/quickstart.yaml --out runs/demo
    """
    cfg = load(config, set_)
    from coordinator.records import State
    from coordinator.runs import create_run, new_run_id
    from coordinator.settings import Settings

    settings = Settings.from_env()
    run_id = new_run_id(cfg)
    run_dir = (out or settings.runs_dir / run_id).absolute()
    if (run_dir / "manifest.json").exists() or (run_dir / "config.yaml").exists():
        fail(f"--out {run_dir} already holds a run; choose another directory")
    store = open_store(settings)
    dispatcher = open_dispatcher(settings)
    create_run(cfg, store=store, run_id=run_id, run_dir=run_dir, checkpoint_uri=settings.checkpoint_uri)
    typer.echo(f"run {run_id} -> {run_dir}")
    try:
        state = _drive_with_progress(run_id, store, dispatcher)
    finally:
        dispatcher.shutdown()
        close_embedded(store.client)
    if state != State.SUCCEEDED:
        raise typer.Exit(1)


def _drive_with_progress(run_id: str, store, dispatcher):
    """A live rich table on a terminal; plain lines (state changes + a progress line every 15 s) otherwise."""
    from rich.console import Console
    from rich.live import Live

    import coordinator.cli.live as live
    from coordinator.records import run_view
    from coordinator.service import Coordinator

    console = Console()
    if not console.is_terminal:
        return Coordinator(store=store, dispatcher=dispatcher, log=typer.echo, only_runs={run_id}).run_until_done(
            run_id
        )
    rates = live.Rates()
    with Live(console=console, refresh_per_second=2, transient=False) as view:
        coordinator = Coordinator(
            store=store,
            dispatcher=dispatcher,
            log=view.console.print,
            only_runs={run_id},
            progress_every_s=float("inf"),
        )

        def refresh() -> None:
            run = run_view(store.get_run(run_id), store.get_blocks(run_id))
            live.observe(rates, run)
            view.update(live.render(run, rates))

        return coordinator.run_until_done(run_id, on_tick=refresh)


@app.command()
def sample(
    run_dir: Annotated[Path, typer.Argument(help="Run directory, or a run id with --server.")],
    out: Annotated[
        Path, typer.Option(help="FILE.png (grid) or FILE.npz (samples, labels); a text run: FILE.txt (one per line).")
    ],
    num_per_class: Annotated[int | None, typer.Option(help="Samples per class.")] = None,
    num: Annotated[int | None, typer.Option(help="Text runs: how many samples (default 8).")] = None,
    length: Annotated[
        int | None,
        typer.Option(help="Text runs: symbols per sample (default: text.seq_len); autoregressive: tokens generated."),
    ] = None,
    steps: Annotated[int | None, typer.Option(help="Sampler steps.")] = None,
    iterations: Annotated[
        int | None, typer.Option(help="Recurrent-depth runs: core iterations K per generated token (= --steps).")
    ] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", help="Guidance scale.")] = None,
    seed: Annotated[int | None, typer.Option(help="Sampling seed.")] = None,
    weights: Annotated[str | None, typer.Option(help="ema or raw.")] = None,
    prompt: Annotated[
        str | None,
        typer.Option(
            help="Autoregressive runs: the text each sample continues (each line: the prompt and its continuation)."
        ),
    ] = None,
    temperature: Annotated[
        float | None, typer.Option(help="Autoregressive runs: sampling temperature (0: the most likely token).")
    ] = None,
    server: Annotated[
        str | None,
        typer.Option(
            "--server",
            envvar="DBLOCKS_SERVER",
            help="Coordinator URL: sample a run of the service by id (used unless RUN_DIR is a directory).",
        ),
    ] = None,
) -> None:
    """Sample from an assembled run directory (the manifest is verified first), or through the service.

    Examples: dblocks sample runs/demo --num-per-class 8 --out grid.png;
    dblocks sample RUN_ID --server http://127.0.0.1:8000 --steps 30 --out grid.png;
    dblocks sample runs/lm --prompt "The " --num 4 --length 32 --out continued.txt;
    dblocks sample runs/recurrent --prompt "The " --iterations 8 --out continued.txt
    """
    if iterations is not None:  # a recurrent-depth core's iterations are its sampler steps
        if steps is not None and steps != iterations:
            fail(f"--iterations {iterations} and --steps {steps}: give one (they are the same for recurrent depth)")
        steps = iterations
    if out.suffix == ".txt":
        prompted = {k: v for k, v in {"prompt": prompt, "temperature": temperature}.items() if v is not None}
        _sample_text(
            run_dir,
            out,
            num=num,
            length=length,
            steps=steps,
            seed=seed,
            weights=weights,
            server=server,
            prompted=prompted,
        )
    else:
        params = {"num_per_class": num_per_class, "steps": steps, "cfg": cfg, "seed": seed, "weights": weights}
        _sample_images(run_dir, out, server=server, **params)


def _sample_images(run_dir: Path, out: Path, *, server, num_per_class, steps, cfg, seed, weights) -> None:
    """`dblocks sample RUN --out FILE.png|.npz`: a grid or the raw samples, from a run directory or the service."""
    from shared.images import save_grid
    from shared.tasks.outputs import outputs_for

    if out.suffix not in (".png", ".npz"):
        fail(f"--out {out}: must end in .png or .npz (.txt for a text run)")
    if weights not in (None, "ema", "raw"):
        fail(f"--weights {weights!r}: must be 'ema' or 'raw'")
    if server and not run_dir.is_dir():
        if out.suffix != ".png":
            fail(f"--out {out}: the service returns a .png grid")
        params = {
            k: v
            for k, v in {
                "num_per_class": num_per_class,
                "steps": steps,
                "cfg": cfg,
                "seed": seed,
                "weights": weights,
            }.items()
            if v is not None
        }
        with answered(), client(server) as c:
            out.write_bytes(c.samples_png(str(run_dir), **params))
        typer.echo(f"wrote the samples of {run_dir} to {out}")
        return
    config = run_config(run_dir)
    outputs = TASKS[config.task].outputs
    if SAMPLES_TXT in outputs:
        fail(f"{run_dir} is a {config.task} run: its samples are text (--out FILE.txt)")
    if SAMPLES_PNG not in outputs:
        fail(f"{run_dir} is a {config.task} run: it has no samples (label images with `dblocks predict`)")
    try:
        samples, labels = outputs_for(config).sample_images(
            run_dir, config, num_per_class=num_per_class, num_steps=steps, cfg_scale=cfg, seed=seed, weights=weights
        )
    except CheckpointError as err:
        fail(str(err), 1)
    except DataError as err:  # a latent run whose VAE is not there to decode its samples
        fail(str(err))
    if out.suffix == ".png":
        save_grid(samples, len(labels) // max(1, data_shape(config).num_classes), out)
    else:
        np.savez(out, samples=samples.numpy().astype(np.float32), labels=labels.numpy())
    typer.echo(f"wrote {len(labels)} samples to {out}")


def _sample_text(run_dir: Path, out: Path, *, num, length, steps, seed, weights, server, prompted) -> None:
    """`dblocks sample RUN --out FILE.txt`: one generated text per line, from a run directory or the service;
    `prompted`: --prompt / --temperature, for a task that continues prompts."""
    from shared.tasks.outputs import outputs_for

    if weights not in (None, "ema", "raw"):
        fail(f"--weights {weights!r}: must be 'ema' or 'raw'")
    if server and not run_dir.is_dir():
        params = {"num": num or 8, "length": length, "steps": steps, "seed": seed, "weights": weights, **prompted}
        with answered(), client(server) as c:
            out.write_text(c.samples_txt(str(run_dir), **params))
        typer.echo(f"wrote the samples of {run_dir} to {out}")
        return
    config = run_config(run_dir)
    outputs = TASKS[config.task].outputs
    if SAMPLES_TXT not in outputs:
        fail(f"--out {out}: a .txt file holds text samples; {run_dir} is a {config.task} run (use .png or .npz)")
    if prompted and PROMPTS not in outputs:
        fail(f"--{'/--'.join(prompted)}: {run_dir} is a {config.task} run; it takes no prompts")
    try:
        texts = outputs_for(config).sample_texts(
            run_dir,
            config,
            num=8 if num is None else num,
            length=length,
            steps=steps,
            seed=config.sample.seed if seed is None else seed,
            weights=weights or config.sample.weights,
            **prompted,
        )
    except ValueError as err:
        fail(f"--num/--length/--steps/--prompt: {err}")
    except CheckpointError as err:
        fail(str(err), 1)
    out.write_text("".join(t + "\n" for t in texts))
    typer.echo(f"wrote {len(texts)} samples ({len(texts[0])} characters in the first) to {out}")


@app.command("eval")
def eval_(
    run_dir: Path,
    num_samples: Annotated[int, typer.Option(help="Class-balanced samples to draw.")] = 1000,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    weights: Annotated[str, typer.Option(help="ema or raw.")] = "ema",
    steps: Annotated[int | None, typer.Option(help="Sampler steps (default: the run's).")] = None,
    inception: Annotated[
        Path | None,
        typer.Option(
            help="Image runs: also standard FID, from this local FID Inception-v3 weights file "
            "(pt_inception-2015-12-05-*.pth; never downloaded)."
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Evaluate a finished run on its held-out split. Image generation: Frechet distance (classifier features) and
    class accuracy of its samples, with its noise axis and starting network. Classification: accuracy and
    calibration error (`{"task": "classification", "accuracy": ...}`). Text: bits per character, the Monte-Carlo
    ELBO bound (`{"task": "text", "bpc": ..., "bpc_stderr": ..., "unigram_bpc": ...}`). Autoregressive and
    recurrent depth: MAUVE and generative perplexity of held-out prompts' continuations (recurrent depth: also the
    training FLOPs, `train_flops`; --steps: its core iterations K).

    Example: dblocks eval runs/demo --num-samples 1000 --json
    """
    from coordinator.settings import Settings
    from shared.fid_inception import WeightsError
    from shared.tasks.base import EvalOptions
    from shared.tasks.outputs import outputs_for

    config = run_config(run_dir)
    if weights not in ("ema", "raw"):
        fail(f"--weights {weights!r}: must be 'ema' or 'raw'")
    options = EvalOptions(
        weights=weights,
        seed=seed,
        num_samples=num_samples,
        num_steps=steps,
        inception=inception,
        cache_dir=Settings.from_env().cache_dir,
    )
    outputs = outputs_for(config)
    try:
        result = outputs.evaluate(run_dir, config, options)
    except WeightsError as err:
        fail(f"--inception: {err}")
    except CheckpointError as err:
        fail(str(err), 1)
    except ValueError as err:  # an option the task cannot use, or its data (DataError)
        fail(str(err))
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))  # kept in the run directory
    typer.echo(json.dumps(result, indent=2) if as_json else outputs.summary(result, options))


@app.command()
def predict(
    run_dir: Path,
    input_path: Annotated[
        Path,
        typer.Argument(
            metavar="INPUT",
            help="An .npz with `images` (N x C x H x W in [-1, 1]), a PNG, or a folder of PNGs (sorted by name).",
        ),
    ],
    seed: Annotated[int, typer.Option(help="Seed of the starting noise.")] = 0,
    weights: Annotated[str, typer.Option(help="ema or raw.")] = "ema",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Label images with a classification run: `{"labels": [...]}` in input order.

    Example: dblocks predict runs/classify digits/ --json
    """
    from shared.images import load_images
    from shared.tasks.outputs import outputs_for

    config = run_config(run_dir)
    if PREDICT not in TASKS[config.task].outputs:
        fail(f"{run_dir} is a {config.task} run; predict needs a classification run")
    if weights not in ("ema", "raw"):
        fail(f"--weights {weights!r}: must be 'ema' or 'raw'")
    info = data_shape(config)
    try:
        images = load_images(input_path, channels=info.channels, size=info.image_size)
        probs = outputs_for(config).predict(run_dir, config, images, weights=weights, seed=seed)
    except ValueError as err:
        fail(str(err))
    except CheckpointError as err:
        fail(str(err), 1)
    labels = probs.argmax(dim=1).tolist()
    if as_json:
        typer.echo(json.dumps({"labels": labels, "probabilities": [round(float(p), 6) for p in probs.max(1).values]}))
    else:
        typer.echo(" ".join(str(label) for label in labels))


@app.command()
def report(
    run_dir: Path,
    out: Annotated[Path | None, typer.Option(help="HTML file (default RUN_DIR/report.html).")] = None,
    baseline: Annotated[Path | None, typer.Option(help="An end-to-end run to draw in sigma_loss.png.")] = None,
) -> None:
    """One self-contained HTML page: config, plan, pictures, previews and metrics of a run.

    Example: dblocks report runs/demo --baseline runs/e2e && xdg-open runs/demo/report.html
    """
    from coordinator.artefacts.report import render_report
    from shared.pictures import write_sigma_loss

    config = run_config(run_dir)
    if not (run_dir / "manifest.json").is_file():
        fail(f"{run_dir} has no manifest.json: the run has not finished")
    if baseline is not None:
        if not (baseline / "manifest.json").is_file():
            fail(f"--baseline {baseline}: not a finished run directory")
        manifest = json.loads((run_dir / "manifest.json").read_text())
        try:
            write_sigma_loss(run_dir, config, manifest, baselines={f"baseline ({baseline.name})": baseline})
        except CheckpointError as err:
            fail(str(err), 1)
    path = out or run_dir / "report.html"
    path.write_text(render_report(run_dir, config))
    typer.echo(f"wrote {path}")

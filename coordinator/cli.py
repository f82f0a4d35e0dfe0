"""`dblocks` command line: plan, train, sample (and eval). Config errors exit 2 before anything starts."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
import yaml

from shared.checkpoint import CheckpointError
from shared.config import Config, ConfigError, load_config, parse_config

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="dblocks: train a DiffusionBlocks model block by block on Ray.\n\n"
                       "Example: dblocks train configs/quickstart.yaml --set train.steps_per_block=500")

SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override: section.field=value (repeatable).")]


def _fail(message: str, code: int = 2) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _config(path: Path, overrides: list[str] | None) -> Config:
    try:
        return load_config(path, overrides or [])
    except ConfigError as err:
        _fail(str(err))


def _run_config(run_dir: Path) -> Config:
    path = run_dir / "config.yaml"
    if not path.is_file():
        _fail(f"{run_dir} is not a run directory (no config.yaml)")
    return parse_config(yaml.safe_load(path.read_text()))


@app.command()
def plan(config: Path, set_: SetOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Print the block plan (noise boundaries, ranges, layers, parameters). Starts nothing.

    Example: dblocks plan configs/quickstart.yaml --set blocks.num_blocks=4 --json
    """
    from coordinator.plan import plan_json

    doc = plan_json(_config(config, set_))
    if as_json:
        typer.echo(json.dumps(doc, indent=2))
        return
    typer.echo(f"boundaries: {', '.join(f'{b:.5g}' for b in doc['boundaries'])}")
    for b in doc["blocks"]:
        typer.echo(f"block {b['index']}: sigma [{b['sigma_lo']:.5g}, {b['sigma_hi']:.5g}] trains on "
                   f"[{b['train_sigma_lo']:.5g}, {b['train_sigma_hi']:.5g}] layers {b['layers']} "
                   f"params {b['num_params']:,}")


@app.command()
def train(config: Path, set_: SetOpt = None,
          out: Annotated[Optional[Path], typer.Option(help="Run directory (default runs/<run id>).")] = None) -> None:
    """Train every block as its own Ray Train job, assemble them, write samples.png.

    Example: dblocks train configs/quickstart.yaml --out runs/demo
    """
    cfg = _config(config, set_)
    from coordinator.dispatch import RayDispatcher
    from coordinator.runner import create_run, new_run_id
    from coordinator.service import Coordinator
    from coordinator.settings import Settings
    from coordinator.store import State, Store, connect

    settings = Settings.from_env()
    run_id = new_run_id(cfg)
    run_dir = (out or settings.storage / run_id).absolute()
    if (run_dir / "manifest.json").exists() or (run_dir / "config.yaml").exists():
        _fail(f"--out {run_dir} already holds a run; choose another directory")
    store = Store(connect(settings.redis_url, settings.storage / ".redis"), settings.key_prefix)
    dispatcher = RayDispatcher(address=settings.ray_address, auth_mode=settings.ray_auth_mode)
    dispatcher.connect()
    create_run(cfg, store=store, run_id=run_id, run_dir=run_dir, checkpoint_uri=settings.checkpoint_uri)
    typer.echo(f"run {run_id} -> {run_dir}")
    try:
        state = _drive_with_progress(run_id, store, dispatcher)
    finally:
        dispatcher.shutdown()
    if state != State.SUCCEEDED:
        raise typer.Exit(1)


def _run_dict(store, run_id: str) -> dict:
    from dataclasses import asdict

    run = store.get_run(run_id)
    blocks = [{**asdict(b), "state": str(b.state)} for b in store.get_blocks(run_id)]
    return {"id": run.id, "state": str(run.state), "blocks": blocks}


def _drive_with_progress(run_id: str, store, dispatcher):
    """A live rich table on a terminal; plain lines (state changes + a progress line every 15 s) otherwise."""
    from rich.console import Console
    from rich.live import Live

    from coordinator import live
    from coordinator.service import Coordinator

    console = Console()
    if not console.is_terminal:
        return Coordinator(store=store, dispatcher=dispatcher, log=typer.echo, only_runs={run_id}).run_until_done(
            run_id)
    rates = live.Rates()
    with Live(console=console, refresh_per_second=2, transient=False) as view:
        coordinator = Coordinator(store=store, dispatcher=dispatcher, log=view.console.print, only_runs={run_id},
                                  progress_every_s=float("inf"))

        def refresh() -> None:
            run = _run_dict(store, run_id)
            live.observe(rates, run)
            view.update(live.render(run, rates))

        return coordinator.run_until_done(run_id, on_tick=refresh)


@app.command()
def sample(run_dir: Annotated[Path, typer.Argument(help="Run directory, or a run id with --server.")],
           out: Annotated[Path, typer.Option(help="FILE.png (grid) or FILE.npz (samples, labels).")],
           num_per_class: Annotated[Optional[int], typer.Option(help="Samples per class.")] = None,
           steps: Annotated[Optional[int], typer.Option(help="Sampler steps.")] = None,
           cfg: Annotated[Optional[float], typer.Option("--cfg", help="Guidance scale.")] = None,
           seed: Annotated[Optional[int], typer.Option(help="Sampling seed.")] = None,
           weights: Annotated[Optional[str], typer.Option(help="ema or raw.")] = None,
           server: Annotated[Optional[str], typer.Option(
               "--server", envvar="DBLOCKS_SERVER",
               help="Coordinator URL: sample a run of the service by id (used unless RUN_DIR is a directory).")]
           = None) -> None:
    """Sample from an assembled run directory (the manifest is verified first), or through the service.

    Examples: dblocks sample runs/demo --num-per-class 8 --out grid.png;
    dblocks sample RUN_ID --server http://127.0.0.1:8000 --steps 30 --out grid.png
    """
    from coordinator.assemble import sample_run
    from shared.data import DATASETS
    from shared.images import save_grid

    if out.suffix not in (".png", ".npz"):
        _fail(f"--out {out}: must end in .png or .npz")
    if weights not in (None, "ema", "raw"):
        _fail(f"--weights {weights!r}: must be 'ema' or 'raw'")
    if server and not run_dir.is_dir():
        if out.suffix != ".png":
            _fail(f"--out {out}: the service returns a .png grid")
        params = {k: v for k, v in {"num_per_class": num_per_class, "steps": steps, "cfg": cfg, "seed": seed,
                                    "weights": weights}.items() if v is not None}
        with _client(server) as c:
            response = c.get(f"/v1/runs/{run_dir}/samples.png", params=params, timeout=600)
        if response.status_code >= 400:
            _checked(response)
        out.write_bytes(response.content)
        typer.echo(f"wrote the samples of {run_dir} to {out}")
        return
    config = _run_config(run_dir)
    try:
        samples, labels = sample_run(run_dir, config, num_per_class=num_per_class, num_steps=steps,
                                     cfg_scale=cfg, seed=seed, weights=weights)
    except CheckpointError as err:
        _fail(str(err), 1)
    if out.suffix == ".png":
        save_grid(samples, len(labels) // DATASETS[config.data.dataset].num_classes, out)
    else:
        np.savez(out, samples=samples.numpy().astype(np.float32), labels=labels.numpy())
    typer.echo(f"wrote {len(labels)} samples to {out}")


LOOPBACK = ("127.0.0.1", "localhost", "::1")
ServerOpt = Annotated[str, typer.Option("--server", envvar="DBLOCKS_SERVER", help="Coordinator URL.")]


def _client(server: str):
    import httpx

    from coordinator.settings import Settings

    token = Settings.from_env().api_token
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=server, headers=headers, timeout=30)


def _checked(response) -> dict:
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail", response.text)
        except ValueError:
            detail = response.text
        _fail(f"{response.status_code}: {detail}", 1)
    return response.json()


@app.command()
def serve(host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
          port: Annotated[int, typer.Option(help="HTTP port.")] = 8000,
          ray_node: Annotated[bool, typer.Option(
              "--ray-node", help="Join RAY_ADDRESS as a Ray node (no CPUs, GPUs or memory offered) before "
                                 "connecting, and live and die with it: needed wherever this host runs no Ray "
                                 "node, as in the compose coordinator container.")] = False) -> None:
    """Run the coordinator service: HTTP API + the reconcile loop that owns all Ray dispatch.

    Environment: REDIS_URL, RAY_ADDRESS, DBLOCKS_API_TOKEN, DBLOCKS_STORAGE.
    Example: dblocks serve --port 8000   (in a container: RAY_ADDRESS=ray-head:6380 dblocks serve --ray-node)
    """
    import signal
    import threading

    import uvicorn

    from coordinator.api import create_app
    from coordinator.dispatch import RayDispatcher
    from coordinator.service import Coordinator
    from coordinator.settings import Settings
    from coordinator.store import Store, connect

    settings = Settings.from_env()
    if host not in LOOPBACK and not settings.api_token:
        _fail(f"--host {host}: refusing to serve beyond loopback without DBLOCKS_API_TOKEN")
    if ray_node and not settings.ray_address:
        _fail("--ray-node: set RAY_ADDRESS to the cluster to join (without it, serve starts its own local cluster)")
    client = connect(settings.redis_url, settings.storage / ".redis")
    store = Store(client, settings.key_prefix)
    node = None
    if ray_node:
        from coordinator.ray_node import RayNode, RayNodeError

        node = RayNode(settings.ray_address)
        try:
            node.start()
        except RayNodeError as err:
            _fail(f"--ray-node: {err}")
        node_exit: list[int] = []
        node.watch(lambda code: (node_exit.append(code), typer.echo(f"ray node exited ({code}); stopping", err=True),
                                 os.kill(os.getpid(), signal.SIGTERM)))
    dispatcher = RayDispatcher(address=settings.ray_address, auth_mode=settings.ray_auth_mode)
    dispatcher.connect()
    from coordinator.metrics import Metrics

    metrics = Metrics()
    if settings.metrics_port:
        metrics.serve(settings.metrics_port)
    coordinator = Coordinator(store=store, dispatcher=dispatcher, log=typer.echo, poll_s=settings.poll_s,
                              lease_ttl_s=settings.lease_ttl_s, max_in_flight=settings.max_in_flight,
                              metrics=metrics)
    stop = threading.Event()
    loop = threading.Thread(target=coordinator.run_forever, args=(stop,), name="reconcile", daemon=True)
    loop.start()

    def ready() -> dict[str, bool]:
        try:
            redis_ok = bool(client.ping())
        except Exception:
            redis_ok = False
        checks = {"redis": redis_ok, "ray": dispatcher.ready(), "reconcile_loop": loop.is_alive()}
        return {**checks, "ray_node": node.alive()} if node is not None else checks

    api = create_app(store=store, storage=settings.storage, api_token=settings.api_token, ready=ready,
                     metrics=metrics, checkpoint_uri=settings.checkpoint_uri)
    typer.echo(f"dblocks coordinator on http://{host}:{port} (storage {settings.storage})")
    try:
        uvicorn.run(api, host=host, port=port, log_level="warning")
    finally:
        stop.set()
        loop.join(timeout=30)
        dispatcher.shutdown()
        if node is not None:
            node.stop()
    if node is not None and node_exit:  # the node died under us: a non-zero exit restarts the container
        raise typer.Exit(1)


@app.command()
def submit(config: Path, server: ServerOpt, set_: SetOpt = None) -> None:
    """Submit a run to a coordinator service; prints its id. Example: dblocks submit cfg.yaml --server URL"""
    cfg = _config(config, set_)
    with _client(server) as c:
        typer.echo(_checked(c.post("/v1/runs", json=cfg.model_dump()))["id"])


@app.command()
def status(run_id: str, server: ServerOpt, as_json: Annotated[bool, typer.Option("--json")] = False,
           watch: Annotated[bool, typer.Option("--watch", help="Follow the run live until it ends.")] = False,
           ) -> None:
    """A run's state and its blocks'. Example: dblocks status RUN_ID --watch --server http://127.0.0.1:8000"""
    if watch:
        _watch(run_id, server)
        return
    with _client(server) as c:
        run = _checked(c.get(f"/v1/runs/{run_id}"))
    if as_json:
        typer.echo(json.dumps(run, indent=2))
        return
    typer.echo(f"{run['id']}: {run['state']} {run['error']}")
    for b in run["blocks"]:
        loss = f"{b['loss']:.4f}" if b["loss"] is not None else "-"
        typer.echo(f"  block {b['index']}: {b['state']:9} step {b['step']}/{b['total_steps']} loss {loss} "
                   f"attempt {b['attempt']} resumed_from {b['resumed_from_step']} {b['node']}")


def _watch(run_id: str, server: str, interval_s: float = 2.0) -> None:
    import time

    from rich.console import Console
    from rich.live import Live

    from coordinator import live

    console, rates = Console(), live.Rates()
    with _client(server) as c:
        if not console.is_terminal:
            while True:
                run = _checked(c.get(f"/v1/runs/{run_id}"))
                typer.echo(f"{run['state']}  {live.line(run)}")
                if run["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    return
                time.sleep(interval_s * 5)
        with Live(console=console, refresh_per_second=2) as view:
            while True:
                run = _checked(c.get(f"/v1/runs/{run_id}"))
                live.observe(rates, run)
                view.update(live.render(run, rates))
                if run["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    return
                time.sleep(interval_s)


@app.command()
def cancel(run_id: str, server: ServerOpt) -> None:
    """Cancel a run. Example: dblocks cancel RUN_ID --server http://127.0.0.1:8000"""
    with _client(server) as c:
        _checked(c.post(f"/v1/runs/{run_id}/cancel"))
    typer.echo(f"cancel requested for {run_id}")


@app.command()
def retrain(run_id: str, block: int, server: ServerOpt,
            from_scratch: Annotated[bool, typer.Option("--from-scratch/--resume",
                                                       help="New weights, or train on from its checkpoint.")] = True,
            steps: Annotated[Optional[int], typer.Option(help="Total steps for the block.")] = None) -> None:
    """Train one block of a finished run again and re-assemble; other blocks stay untouched.

    Example: dblocks retrain RUN_ID 2 --resume --steps 4000 --server http://127.0.0.1:8000
    """
    with _client(server) as c:
        _checked(c.post(f"/v1/runs/{run_id}/blocks/{block}/retrain",
                        json={"from_scratch": from_scratch, "steps": steps}))
    typer.echo(f"block {block} of {run_id} queued for retraining")


@app.command("eval")
def eval_(run_dir: Path,
          num_samples: Annotated[int, typer.Option(help="Class-balanced samples to draw.")] = 1000,
          seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
          weights: Annotated[str, typer.Option(help="ema or raw.")] = "ema",
          steps: Annotated[Optional[int], typer.Option(help="Sampler steps (default: the run's).")] = None,
          as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Frechet distance (classifier features) and class accuracy of a run's samples vs held-out test images.

    Example: dblocks eval runs/demo --num-samples 1000 --json
    """
    from coordinator.quality import evaluate_run
    from coordinator.settings import Settings

    config = _run_config(run_dir)
    if weights not in ("ema", "raw"):
        _fail(f"--weights {weights!r}: must be 'ema' or 'raw'")
    if num_samples < 10:
        _fail(f"--num-samples {num_samples}: need at least one sample per class")
    try:
        result = evaluate_run(run_dir, config, num_samples=num_samples, seed=seed, weights=weights,
                              num_steps=steps, cache_dir=Settings.from_env().cache_dir)
    except CheckpointError as err:
        _fail(str(err), 1)
    (run_dir / "eval.json").write_text(json.dumps(result, indent=2))
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        typer.echo(f"FD {result['fd']:.2f} (floor {result['fd_floor']:.2f})  class accuracy "
                   f"{result['class_accuracy']:.3f}  ({result['num_samples']} samples, classifier test accuracy "
                   f"{result['classifier_test_accuracy']:.3f})")


@app.command()
def report(run_dir: Path, out: Annotated[Optional[Path], typer.Option(help="HTML file (default RUN_DIR/report.html).")]
           = None,
           baseline: Annotated[Optional[Path], typer.Option(help="An end-to-end run to draw in sigma_loss.png.")]
           = None) -> None:
    """One self-contained HTML page: config, plan, pictures, previews and metrics of a run.

    Example: dblocks report runs/demo --baseline runs/e2e && xdg-open runs/demo/report.html
    """
    from coordinator.pictures import write_sigma_loss
    from coordinator.report import render_report

    config = _run_config(run_dir)
    if not (run_dir / "manifest.json").is_file():
        _fail(f"{run_dir} has no manifest.json: the run has not finished")
    if baseline is not None:
        if not (baseline / "manifest.json").is_file():
            _fail(f"--baseline {baseline}: not a finished run directory")
        manifest = json.loads((run_dir / "manifest.json").read_text())
        try:
            write_sigma_loss(run_dir, config, manifest, baselines={f"baseline ({baseline.name})": baseline})
        except CheckpointError as err:
            _fail(str(err), 1)
    path = out or run_dir / "report.html"
    path.write_text(render_report(run_dir, config))
    typer.echo(f"wrote {path}")


bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print JSON and write under benchmarks/results/.")
app.add_typer(bench_app, name="bench")


@bench_app.command("quality")
def bench_quality_cmd(
        budget: Annotated[str, typer.Option(help="small (~30 min on 2 CPU cores), medium (<= 2.5 h, 3 seeds), "
                                                 "long (the 3x pair) or full.")] = "small",
        config: Annotated[Path, typer.Option(help="Base config.")] = Path("configs/quickstart.yaml"),
        num_samples: Annotated[Optional[int], typer.Option(help="Samples per evaluated run (default: the "
                                                                "budget's, 1000; medium 500).")] = None,
        results_dir: Annotated[Path, typer.Option(help="Folder of the JSON result.")] = Path("benchmarks/results"),
        doc_dir: Annotated[Optional[Path], typer.Option(help="Folder for the generated quality-BUDGET.md.")] =
        Path("docs"),
        as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """End-to-end vs DiffusionBlocks at equal layer-updates; EMA and raw weights; resumable.

    Runs already in RESULTS_DIR/quality-BUDGET.json are kept: rerunning an interrupted budget continues it.
    Example: dblocks bench quality --budget medium --json
    """
    from coordinator.bench_quality import BUDGETS, bench_quality, dump, write_quality_doc
    from coordinator.dispatch import RayDispatcher
    from coordinator.settings import Settings
    from coordinator.store import Store, connect

    if budget not in BUDGETS:
        _fail(f"--budget {budget!r}: must be one of {', '.join(BUDGETS)}")
    _config(config, [])
    settings = Settings.from_env()
    store = Store(connect(settings.redis_url, settings.storage / ".redis"), settings.key_prefix)
    dispatcher = RayDispatcher(address=settings.ray_address, auth_mode=settings.ray_auth_mode)
    dispatcher.connect()
    log = (lambda m: typer.echo(m, err=True)) if as_json else typer.echo
    out = results_dir / f"quality-{budget}.json"
    previous = json.loads(out.read_text()) if out.is_file() else None
    command = f"dblocks bench quality --budget {budget} --json"

    def save(report: dict) -> None:
        dump(report, out)
        if doc_dir is not None:
            write_quality_doc(report, doc_dir / f"quality-{budget}.md", doc_dir / f"quality_fd_vs_b_{budget}.png",
                              command)

    try:
        report = bench_quality(budget, config, settings.storage / "bench", store=store, dispatcher=dispatcher,
                               cache_dir=settings.cache_dir, num_samples=num_samples, log=log,
                               previous=previous, save=save)
    finally:
        dispatcher.shutdown()
    save(report)
    typer.echo(json.dumps(report, indent=2) if as_json else f"wrote {out}")


ResultsOpt = Annotated[Path, typer.Option(help="Folder for the JSON result.")]


@bench_app.command("memory")
def bench_memory_cmd(config: Annotated[Path, typer.Argument(help="Config (default configs/memory.yaml).")]
                     = Path("configs/memory.yaml"), set_: SetOpt = None,
                     results_dir: ResultsOpt = Path("benchmarks/results"),
                     as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Peak training memory: end-to-end, end-to-end with activation checkpointing, and each block.

    Each case runs in its own fresh process. Example: dblocks bench memory --json
    """
    from coordinator.bench_perf import bench_memory, write_result

    cfg = _config(config, set_)
    result = bench_memory(config, cfg, set_ or [])
    path = write_result(result, f"memory-{cfg.name}-{result['machine']['device'].replace(' ', '_')}", results_dir)
    typer.echo(json.dumps(result, indent=2) if as_json else f"ratio {result['ratio']:.2f} -> {path}")


@bench_app.command("sampling")
def bench_sampling_cmd(run_dir: Annotated[Optional[Path], typer.Argument(help="Assembled run (optional).")] = None,
                       config: Annotated[Path, typer.Option(help="Config when no RUN_DIR.")] = Path("configs/memory.yaml"),
                       batch: Annotated[int, typer.Option(help="Samples per batch (x2 with CFG).")] = 32,
                       steps: Annotated[int, typer.Option(help="Euler steps timed.")] = 20,
                       set_: SetOpt = None, results_dir: ResultsOpt = Path("benchmarks/results"),
                       as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Time per Euler step of the assembled model vs the end-to-end network, same batch and CFG.

    Example: dblocks bench sampling --json
    """
    from coordinator.bench_perf import bench_sampling, write_result

    cfg = _run_config(run_dir) if run_dir else _config(config, set_)
    result = bench_sampling(cfg, run_dir, batch=batch, num_steps=steps)
    path = write_result(result, f"sampling-{cfg.name}-{result['machine']['device'].replace(' ', '_')}",
                        results_dir)
    typer.echo(json.dumps(result, indent=2) if as_json else f"ratio {result['ratio']:.2f} -> {path}")


@bench_app.command("throughput")
def bench_throughput_cmd(config: Annotated[Path, typer.Argument(help="Config.")] = Path("configs/memory.yaml"),
                         set_: SetOpt = None, steps: Annotated[int, typer.Option(help="Steps (half timed).")] = 20,
                         results_dir: ResultsOpt = Path("benchmarks/results"),
                         as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Training steps/s of one block vs the end-to-end net, achieved TFLOP/s and MFU (GPU).

    Example: dblocks bench throughput configs/dit_s.yaml --set train.precision=bf16 --json
    """
    from coordinator.bench_perf import bench_throughput, write_result

    cfg = _config(config, set_)
    result = bench_throughput(cfg, steps=steps)
    path = write_result(result, f"throughput-{cfg.name}-{result['machine']['device'].replace(' ', '_')}",
                        results_dir)
    typer.echo(json.dumps(result, indent=2) if as_json else f"-> {path}")


def _ray_bench(kind: str, config: Path, set_: list[str] | None, defaults: list[str]) -> dict:
    from coordinator import bench_ray
    from coordinator.dispatch import RayDispatcher
    from coordinator.settings import Settings
    from coordinator.store import Store, connect

    cfg = _config(config, [*defaults, *(set_ or [])])
    settings = Settings.from_env()
    store = Store(connect(settings.redis_url, settings.storage / ".redis"), settings.key_prefix)
    dispatcher = RayDispatcher(address=settings.ray_address, auth_mode=settings.ray_auth_mode)
    dispatcher.connect()
    log = lambda m: typer.echo(m, err=True)  # noqa: E731
    try:
        bench = getattr(bench_ray, f"bench_{kind}")
        return bench(cfg, settings.storage / "bench", store=store, dispatcher=dispatcher, log=log)
    finally:
        dispatcher.shutdown()


@bench_app.command("scaling")
def bench_scaling_cmd(config: Annotated[Path, typer.Argument(help="Config (default quickstart, B=2).")]
                      = Path("configs/quickstart.yaml"), set_: SetOpt = None,
                      results_dir: ResultsOpt = Path("benchmarks/results"),
                      as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """B blocks concurrently vs each alone (parallel efficiency), and block-parallel vs end-to-end wall time.

    Default: B=2, 1 CPU (thread) per block, 300 steps. Example: dblocks bench scaling --json
    """
    from coordinator.bench_perf import write_result

    result = _ray_bench("scaling", config, set_, ["blocks.num_blocks=2", "train.steps_per_block=300"])
    path = write_result(result, f"scaling-{result['machine']['device'].replace(' ', '_')}", results_dir)
    typer.echo(json.dumps(result, indent=2) if as_json else f"efficiency {result['efficiency']:.2f} -> {path}")


@bench_app.command("dispatch")
def bench_dispatch_cmd(config: Annotated[Path, typer.Argument(help="Config (default quickstart, B=2).")]
                       = Path("configs/quickstart.yaml"), set_: SetOpt = None,
                       results_dir: ResultsOpt = Path("benchmarks/results"),
                       as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Seconds from creating a run to each block's first training step; coordinator overhead per block.

    Example: dblocks bench dispatch --json
    """
    from coordinator.bench_perf import write_result

    result = _ray_bench("dispatch", config, set_, ["blocks.num_blocks=2", "train.steps_per_block=100"])
    path = write_result(result, f"dispatch-{result['machine']['device'].replace(' ', '_')}", results_dir)
    typer.echo(json.dumps(result, indent=2) if as_json else f"first step {result['first_step_s']:.1f} s -> {path}")


def main() -> None:
    app(prog_name="dblocks")


if __name__ == "__main__":
    sys.exit(main())

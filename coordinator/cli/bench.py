"""`dblocks bench ...`: benchmarks that print JSON and write under benchmarks/results/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from coordinator.cli.apps import bench_app
from coordinator.cli.common import ResultsOpt, SetOpt, fail, load, open_dispatcher, open_store, run_config
from coordinator.store import close_embedded
from shared.config import EQUAL_STEPS

TaskOpt = Annotated[
    str,
    typer.Option(
        help="image_generation (FD vs end-to-end), classification (accuracy vs backprop), text (BPC vs end-to-end), "
        "autoregressive (MAUVE vs backprop) or recurrent_depth (MAUVE and FLOPs vs truncated backprop)."
    ),
]
SeedsOpt = Annotated[
    str | None,
    typer.Option(
        help="Only these of the budget's seeds, comma-separated (invocations over disjoint parts may run side by "
        "side: each merges into the one JSON)."
    ),
]
CasesOpt = Annotated[str | None, typer.Option(help="Only these of the budget's cases, by label, separated by ';'.")]


@bench_app.command("quality")
def bench_quality_cmd(
    budget: Annotated[
        str,
        typer.Option(help="small (~30 min on 2 CPU cores), medium (<= 2.5 h, 3 seeds), long (the 3x pair) or full."),
    ] = "small",
    config: Annotated[
        Path | None, typer.Option(help="Base config (default: configs/quickstart.yaml; classify.yaml for --task).")
    ] = None,
    task: TaskOpt = "image_generation",
    num_samples: Annotated[
        int | None, typer.Option(help="Samples per evaluated run (default: the budget's, 1000; medium 500).")
    ] = None,
    results_dir: Annotated[Path, typer.Option(help="Folder of the JSON result.")] = Path("benchmarks/results"),
    doc_dir: Annotated[Path | None, typer.Option(help="Folder for the generated quality-BUDGET.md.")] = Path(
        "docs/generated"
    ),
    seeds: SeedsOpt = None,
    cases: CasesOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """End-to-end vs DiffusionBlocks at equal layer-updates; EMA and raw weights; resumable.

    Runs already in RESULTS_DIR/quality-BUDGET.json are kept: rerunning an interrupted budget continues it.
    Example: dblocks bench quality --budget medium --json
    """
    from benchmarks.quality import BUDGETS, bench_quality, quality_of, save_merged
    from coordinator.settings import Settings

    if budget not in BUDGETS:
        fail(f"--budget {budget!r}: must be one of {', '.join(BUDGETS)}")
    try:
        quality = quality_of(task)
        quality.budget(budget)
    except ValueError as err:
        fail(f"--task {task!r} --budget {budget!r}: {err}")
    only_seeds, only_cases = budget_part(quality.budget(budget), budget, seeds, cases)
    config = config or Path(quality.default_config)
    base_task = load(config, []).task
    if base_task != task:
        fail(f"--config {config}: a {base_task} config; --task {task} needs a {task} config")
    settings = Settings.from_env()
    store = open_store(settings)
    dispatcher = open_dispatcher(settings)
    log = (lambda m: typer.echo(m, err=True)) if as_json else typer.echo
    out = results_dir / f"{quality.results_stem}-{budget}.json"
    previous = json.loads(out.read_text()) if out.is_file() else None
    command = quality.command.format(budget=budget)

    def save(report: dict) -> dict:
        merged = save_merged(budget, task, report, out)
        if doc_dir is not None:
            quality.page(merged, doc_dir, command)
        return merged

    try:
        report = bench_quality(
            budget,
            config,
            settings.runs_dir / "bench",
            store=store,
            dispatcher=dispatcher,
            cache_dir=settings.cache_dir,
            num_samples=num_samples,
            log=log,
            previous=previous,
            save=save,
            task=task,
            seeds=only_seeds,
            cases=only_cases,
        )
    finally:
        dispatcher.shutdown()
        close_embedded(store.client)
    report = save(report)
    typer.echo(json.dumps(report, indent=2) if as_json else f"wrote {out}")


def budget_part(spec, budget: str, seeds: str | None, cases: str | None) -> tuple[set[int] | None, set[str] | None]:
    """The seeds and case labels `--seeds` and `--cases` pick from a budget (None: all), refused if not in it."""
    only_seeds = only_cases = None
    if seeds is not None:
        try:
            only_seeds = {int(s) for s in seeds.split(",")}
        except ValueError:
            fail(f"--seeds {seeds!r}: comma-separated integers, e.g. 0,2")
        if not only_seeds <= set(spec.seeds):
            fail(f"--seeds {seeds!r}: the {budget} budget's seeds are {', '.join(map(str, spec.seeds))}")
    if cases is not None:
        only_cases = {c.strip() for c in cases.split(";")}
        labels = [c.label for c in spec.cases]
        if not only_cases <= set(labels):
            fail(f"--cases {cases!r}: the {budget} budget's cases are {'; '.join(labels)}")
    return only_seeds, only_cases


@bench_app.command("memory")
def bench_memory_cmd(
    config: Annotated[Path, typer.Argument(help="Config (default configs/memory.yaml).")] = Path("configs/memory.yaml"),
    set_: SetOpt = None,
    results_dir: ResultsOpt = Path("benchmarks/results"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Peak training memory: end-to-end, end-to-end with activation checkpointing, and each block.

    Each case runs in its own fresh process. Example: dblocks bench memory --json
    """
    from benchmarks.perf import bench_memory, write_result

    cfg = load(config, set_)
    result = bench_memory(config, cfg, set_ or [])
    path = write_result(result, f"memory-{cfg.name}-{result['machine']['device'].replace(' ', '_')}", results_dir)
    typer.echo(json.dumps(result, indent=2) if as_json else f"ratio {result['ratio']:.2f} -> {path}")


@bench_app.command("sampling")
def bench_sampling_cmd(
    run_dir: Annotated[Path | None, typer.Argument(help="Assembled run (optional).")] = None,
    config: Annotated[Path, typer.Option(help="Config when no RUN_DIR.")] = Path("configs/memory.yaml"),
    batch: Annotated[int, typer.Option(help="Samples per batch (x2 with CFG).")] = 32,
    steps: Annotated[int, typer.Option(help="Euler steps timed.")] = 20,
    set_: SetOpt = None,
    results_dir: ResultsOpt = Path("benchmarks/results"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Time per Euler step of the assembled model vs the end-to-end network, same batch and CFG.

    Example: dblocks bench sampling --json
    """
    from benchmarks.perf import bench_sampling, write_result

    cfg = run_config(run_dir) if run_dir else load(config, set_)
    result = bench_sampling(cfg, run_dir, batch=batch, num_steps=steps)
    path = write_result(result, f"sampling-{cfg.name}-{result['machine']['device'].replace(' ', '_')}", results_dir)
    typer.echo(json.dumps(result, indent=2) if as_json else f"ratio {result['ratio']:.2f} -> {path}")


@bench_app.command("throughput")
def bench_throughput_cmd(
    config: Annotated[Path, typer.Argument(help="Config.")] = Path("configs/memory.yaml"),
    set_: SetOpt = None,
    steps: Annotated[int, typer.Option(help="Steps (half timed).")] = 20,
    results_dir: ResultsOpt = Path("benchmarks/results"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Training steps/s of one block vs the end-to-end net, achieved TFLOP/s and MFU (GPU).

    Example: dblocks bench throughput configs/dit_s.yaml --set train.precision=bf16 --json
    """
    from benchmarks.perf import bench_throughput, write_result

    cfg = load(config, set_)
    result = bench_throughput(cfg, steps=steps)
    path = write_result(result, f"throughput-{cfg.name}-{result['machine']['device'].replace(' ', '_')}", results_dir)
    typer.echo(json.dumps(result, indent=2) if as_json else f"-> {path}")


def _ray_bench(kind: str, config: Path, set_: list[str] | None, defaults: list[str]) -> dict:
    from benchmarks import cluster as bench_cluster
    from coordinator.settings import Settings

    cfg = load(config, [*defaults, *(set_ or [])])
    settings = Settings.from_env()
    store = open_store(settings)
    dispatcher = open_dispatcher(settings)
    log = lambda m: typer.echo(m, err=True)  # noqa: E731
    try:
        bench = getattr(bench_cluster, f"bench_{kind}")
        return bench(cfg, settings.runs_dir / "bench", store=store, dispatcher=dispatcher, log=log)
    finally:
        dispatcher.shutdown()
        close_embedded(store.client)  # the embedded redis-server otherwise outlived the bench


@bench_app.command("scaling")
def bench_scaling_cmd(
    config: Annotated[Path, typer.Argument(help="Config (default quickstart, B=2).")] = Path("configs/quickstart.yaml"),
    set_: SetOpt = None,
    results_dir: ResultsOpt = Path("benchmarks/results"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """B blocks concurrently vs each alone (parallel efficiency), and block-parallel vs end-to-end wall time.

    Default: B=2, 1 CPU (thread) per block, 300 steps. Example: dblocks bench scaling --json
    """
    from benchmarks.perf import write_result

    result = _ray_bench("scaling", config, set_, ["blocks.num_blocks=2", "train.steps_per_block=300", EQUAL_STEPS])
    path = write_result(result, f"scaling-{result['machine']['device'].replace(' ', '_')}", results_dir)
    typer.echo(json.dumps(result, indent=2) if as_json else f"efficiency {result['efficiency']:.2f} -> {path}")


@bench_app.command("dispatch")
def bench_dispatch_cmd(
    config: Annotated[Path, typer.Argument(help="Config (default quickstart, B=2).")] = Path("configs/quickstart.yaml"),
    set_: SetOpt = None,
    results_dir: ResultsOpt = Path("benchmarks/results"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Seconds from creating a run to each block's first training step; coordinator overhead per block.

    Example: dblocks bench dispatch --json
    """
    from benchmarks.perf import write_result

    result = _ray_bench("dispatch", config, set_, ["blocks.num_blocks=2", "train.steps_per_block=100", EQUAL_STEPS])
    path = write_result(result, f"dispatch-{result['machine']['device'].replace(' ', '_')}", results_dir)
    typer.echo(json.dumps(result, indent=2) if as_json else f"first step {result['first_step_s']:.1f} s -> {path}")


@bench_app.command("data")
def bench_data_cmd(
    small_mb: Annotated[float, typer.Option(min=0.1, max=100_000, help="Size of the small dataset.")] = 100,
    large_mb: Annotated[float, typer.Option(min=0.1, max=100_000, help="Size of the large dataset.")] = 2000,
    steps: Annotated[int, typer.Option(min=1, max=1_000_000, help="Training steps per case.")] = 200,
    read_batches: Annotated[int, typer.Option(min=1, max=1_000_000, help="Batches timed for the reader.")] = 50,
    ray_data_cpus: Annotated[
        list[int] | None, typer.Option(min=1, max=1024, help="CPUs of each Ray Data run (default: 1 and all).")
    ] = None,
    results_dir: ResultsOpt = Path("benchmarks/results"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Peak RSS of a block worker streaming a ~2 GB Parquet dataset vs a ~100 MB one; reader vs training rate.

    The datasets (random-noise 64x64 RGB PNGs) are written once under the cache directory.
    Example: dblocks bench data --json
    """
    from benchmarks.data import bench_data
    from benchmarks.perf import write_result
    from coordinator.settings import Settings

    result = bench_data(
        Settings.from_env().cache_dir,
        small_mb=small_mb,
        large_mb=large_mb,
        steps=steps,
        read_batches=read_batches,
        ray_data_cpus=tuple(ray_data_cpus) if ray_data_cpus else None,
    )
    path = write_result(result, f"data-{result['machine']['device'].replace(' ', '_')}", results_dir)
    mib = result["peak_rss_difference_bytes"] / 2**20
    typer.echo(json.dumps(result, indent=2) if as_json else f"peak RSS difference {mib:.0f} MiB -> {path}")


@bench_app.command("api")
def bench_api_cmd(
    duration: Annotated[float, typer.Option(min=1, max=3600, help="Seconds of load.")] = 60,
    clients: Annotated[int, typer.Option(min=1, max=500, help="Clients polling a run's status.")] = 50,
    submit_every: Annotated[float, typer.Option(min=0.1, max=600, help="Seconds between run submissions.")] = 2.0,
    poll_every: Annotated[
        float, typer.Option(min=0.01, max=60, help="Seconds each status poller waits between its requests.")
    ] = 1.0,
    server: Annotated[
        str | None, typer.Option(help="Load this running service instead of one of its own (token: DBLOCKS_API_TOKEN).")
    ] = None,
    run: Annotated[str | None, typer.Option(help="With --server: a finished run to poll and sample.")] = None,
    metrics_url: Annotated[str | None, typer.Option(help="With --server: its /metrics, for the tick time.")] = None,
    results_dir: ResultsOpt = Path("benchmarks/results"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Load test of a real `dblocks serve`: p50/p99 latency per route, errors, tick time before and under load.

    Without --server it starts its own service on loopback (embedded Redis, local Ray, one block job at a time)
    and trains one tiny run first. Drives status pollers, submissions, three samplers (some 429s are deliberate),
    a liveness probe and a listing. Example: dblocks bench api --json
    """
    from benchmarks.api import bench_api, load_test
    from benchmarks.perf import machine, write_result
    from coordinator.settings import Settings

    log = lambda message: typer.echo(message, err=True)  # noqa: E731 (stdout is the JSON)
    if server is not None:
        if run is None:
            fail("--server needs --run: a finished run of that service to poll and sample")
        result = load_test(
            server,
            token=Settings.from_env().api_token,
            run_id=run,
            metrics_url=metrics_url,
            duration_s=duration,
            clients=clients,
            submit_every_s=submit_every,
            poll_every_s=poll_every,
            log=log,
        )
    else:
        result = bench_api(
            duration_s=duration, clients=clients, submit_every_s=submit_every, poll_every_s=poll_every, log=log
        )
    result["machine"] = machine()
    crowd = "" if poll_every == 1.0 else f"-poll{poll_every:g}s"
    path = write_result(result, f"api{crowd}-{result['machine']['device'].replace(' ', '_')}", results_dir)
    summary = f"{result['requests']} requests, {result['errors']} errors"
    typer.echo(json.dumps(result, indent=2) if as_json else f"{summary} -> {path}")


@bench_app.command("coordinator")
def bench_coordinator_cmd(
    runs: Annotated[
        str, typer.Option(help="Comma-separated counts of active runs (8 blocks each) to measure a tick at.")
    ] = "10,100,1000",
    finished: Annotated[
        int, typer.Option(min=0, max=100_000, help="Finished runs added to show they cost nothing.")
    ] = 1000,
    results_dir: ResultsOpt = Path("benchmarks/results"),
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """The reconcile tick's cost at scale: work time and Redis round trips per tick at 10, 100 and 1,000 active
    runs of 8 blocks, and with finished runs added. Real loop and real Redis (REDIS_URL, else an embedded
    redis-server); the cluster is simulated behind the dispatcher interface. Example: dblocks bench coordinator --json
    """
    from benchmarks.coordinator import bench_coordinator
    from benchmarks.perf import machine, write_result
    from coordinator.settings import Settings

    try:
        counts = tuple(int(n) for n in runs.split(","))
    except ValueError:
        fail(f"--runs {runs!r}: comma-separated whole numbers, e.g. 10,100,1000")
    if not counts or any(not 1 <= n <= 10_000 for n in counts):
        fail(f"--runs {runs!r}: each count must be between 1 and 10000")
    log = lambda message: typer.echo(message, err=True)  # noqa: E731 (stdout is the JSON)
    result = bench_coordinator(
        redis_url=Settings.from_env().redis_url, active_runs=counts, finished_runs=finished, log=log
    )
    result["machine"] = machine()
    path = write_result(result, f"coordinator-{result['machine']['device'].replace(' ', '_')}", results_dir)
    typer.echo(json.dumps(result, indent=2) if as_json else f"wrote {path}")

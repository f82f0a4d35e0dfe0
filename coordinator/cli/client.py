"""Commands for a client of the coordinator service: submit, status, cancel, retrain (sample --server is in
`coordinator.cli.local`, beside local sampling)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer

from coordinator.cli.apps import app
from coordinator.cli.common import ServerOpt, SetOpt, answered, client, load


@app.command()
def submit(config: Path, server: ServerOpt, set_: SetOpt = None) -> None:
    """Submit a run to a coordinator service; prints its id. Example: dblocks submit cfg.yaml --server URL"""
    cfg = load(config, set_, resolve=False)
    with answered(), client(server) as c:
        typer.echo(c.submit(cfg.model_dump(mode="json")).id)


@app.command()
def status(
    run_id: str,
    server: ServerOpt,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    watch: Annotated[bool, typer.Option("--watch", help="Follow the run live until it ends.")] = False,
) -> None:
    """A run's state and its blocks'. Example: dblocks status RUN_ID --watch --server http://127.0.0.1:8000"""
    if watch:
        _watch(run_id, server)
        return
    with answered(), client(server) as c:
        run = c.run(run_id).model_dump(mode="json")
    if as_json:
        typer.echo(json.dumps(run, indent=2))
        return
    typer.echo(f"{run['id']}: {run['state']} {run['error']}")
    for b in run["blocks"]:
        loss = f"{b['loss']:.4f}" if b["loss"] is not None else "-"
        typer.echo(
            f"  block {b['index']}: {b['state']:9} step {b['step']}/{b['total_steps']} loss {loss} "
            f"attempt {b['attempt']} resumed_from {b['resumed_from_step']} {b['node']}"
        )


def _watch(run_id: str, server: str, interval_s: float = 2.0) -> None:
    from rich.console import Console
    from rich.live import Live

    import coordinator.cli.live as live

    console, rates = Console(), live.Rates()
    with answered(), client(server) as c:
        if not console.is_terminal:
            while True:
                run = c.run(run_id).model_dump(mode="json")
                typer.echo(f"{run['state']}  {live.line(run)}")
                if run["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    return
                time.sleep(interval_s * 5)
        with Live(console=console, refresh_per_second=2) as view:
            while True:
                run = c.run(run_id).model_dump(mode="json")
                live.observe(rates, run)
                view.update(live.render(run, rates))
                if run["state"] in ("SUCCEEDED", "FAILED", "CANCELLED"):
                    return
                time.sleep(interval_s)


@app.command()
def cancel(run_id: str, server: ServerOpt) -> None:
    """Cancel a run. Example: dblocks cancel RUN_ID --server http://127.0.0.1:8000"""
    with answered(), client(server) as c:
        c.cancel(run_id)
    typer.echo(f"cancel requested for {run_id}")


@app.command()
def delete(
    run_id: str,
    server: ServerOpt,
    files: Annotated[bool, typer.Option("--files", help="Also remove the run directory on the service.")] = False,
) -> None:
    """Remove a finished, failed or cancelled run from the service (its records; with --files its directory).

    Example: dblocks delete RUN_ID --files --server http://127.0.0.1:8000
    """
    with answered(), client(server) as c:
        result = c.delete(run_id, files=files)
    typer.echo(f"deleted {run_id}" + (" and its files" if result.files_deleted else ""))


@app.command()
def retrain(
    run_id: str,
    block: int,
    server: ServerOpt,
    from_scratch: Annotated[
        bool, typer.Option("--from-scratch/--resume", help="New weights, or train on from its checkpoint.")
    ] = True,
    steps: Annotated[int | None, typer.Option(help="Total steps for the block.")] = None,
) -> None:
    """Train one block of a finished run again and re-assemble; other blocks stay untouched.

    Example: dblocks retrain RUN_ID 2 --resume --steps 4000 --server http://127.0.0.1:8000
    """
    with answered(), client(server) as c:
        c.retrain(run_id, block, from_scratch=from_scratch, steps=steps)
    typer.echo(f"block {block} of {run_id} queued for retraining")

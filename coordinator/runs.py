"""Creating a run: its id, its records and resolved config, its checkpoint storage, each block's resource demand.

Used by the API, the CLI and the benchmarks; the reconcile loop (`coordinator.runner`) reads what this writes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from coordinator.reconcile import Resources
from coordinator.records import BlockRecord, RunRecord
from coordinator.store import Store
from shared.checkpoint import atomic_write_text
from shared.config import Config
from shared.plan import block_specs
from shared.storage import Storage


def new_run_id(config: Config) -> str:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S-%f")
    return f"{config.name}-{stamp}-{config.hash()[:6]}"


def block_demand(config: Config, index: int) -> Resources:
    """What block `index` holds in the cluster while it trains: its workers' resources, all together."""
    r = config.resources.for_block(index)
    return Resources(cpu=r.cpus, gpu=r.gpus, memory=float(r.memory_bytes)).times(r.num_workers)


def create_run(config: Config, *, store: Store, run_id: str, run_dir: Path, checkpoint_uri: str | None = None) -> None:
    """Write the resolved config and the run + PENDING block records (one transaction). Checkpoints go under
    `checkpoint_uri/<run id>` (a shared path or s3://bucket/prefix), by default `run_dir/checkpoints`."""
    checkpoints = Storage.from_uri(
        f"{checkpoint_uri.rstrip('/')}/{run_id}" if checkpoint_uri else run_dir / "checkpoints"
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", config.to_yaml())
    records = [
        BlockRecord(
            index=s.index, sigma_lo=s.sigma_lo, sigma_hi=s.sigma_hi, total_steps=config.train.steps_for(s.index)
        )
        for s in block_specs(config)
    ]
    store.create_run(
        RunRecord(
            id=run_id,
            config_yaml=config.to_yaml(),
            config_hash=config.hash(),
            run_dir=str(run_dir),
            checkpoint_uri=checkpoints.uri,
        ),
        records,
    )


def run_storage(run: RunRecord) -> Storage:
    """The run's checkpoint storage (runs created before checkpoint_uri existed: run_dir/checkpoints)."""
    return Storage.from_uri(run.checkpoint_uri or Path(run.run_dir) / "checkpoints")

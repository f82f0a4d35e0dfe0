"""The coordinator-worker contract: a block job (the plain data one worker needs to train one block, serialisable
to a dict for Ray), its Ray run name, and where the worker writes progress, history and previews."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shared.config import Config, parse_config
from shared.model import NetSpec
from shared.partition import BlockSpec
from shared.plan import block_seed, net_spec
from shared.storage import Storage


@dataclass(frozen=True, kw_only=True)
class BlockJob:
    run_id: str
    config: Config
    block: BlockSpec
    total_steps: int | None = None  # None: the config's steps for this block (a retrain may ask more)
    generation: int = 0  # bumped by "retrain from scratch": a new Ray run name, so no checkpoint is reused

    @property
    def steps(self) -> int:
        return self.total_steps or self.config.train.steps_for(self.block.index)

    @property
    def name(self) -> str:
        return run_name(self.run_id, self.block.index, self.generation)

    @property
    def net(self) -> NetSpec:
        return net_spec(self.config, self.block.num_layers)

    @property
    def seed(self) -> int:
        return block_seed(self.config.train.seed, self.block.index)

    def to_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "config": self.config.model_dump(),
            "block": self.block.to_dict(),
            "total_steps": self.total_steps,
            "generation": self.generation,
        }

    @classmethod
    def from_dict(cls, data: dict) -> BlockJob:
        return cls(
            run_id=data["run_id"],
            config=parse_config(data["config"], stored=True),  # the task's own run config, as written
            block=BlockSpec(**data["block"]),
            total_steps=data.get("total_steps"),
            generation=data.get("generation", 0),
        )


def run_name(run_id: str, block_index: int, generation: int = 0) -> str:
    """Job name of a block (its checkpoint folder; its Ray Train run name when data-parallel): deterministic, so
    re-submitting it resumes from its checkpoints."""
    return f"{run_id}-block{block_index}" + (f"-g{generation}" if generation else "")


def progress_path(storage: Storage, job: BlockJob) -> str:
    """Where rank 0 writes live metrics: beside Ray's own run directory on the checkpoint storage."""
    return storage.path(job.name, "progress.json")


HISTORY_SEGMENT_LINES = 100  # reports per history segment: the most a worker rewrites on each report


def history_dir(storage: Storage, job: BlockJob) -> str:
    """Every report of the block, one JSON line each (the loss curves), in segments `part-00000.jsonl`, ... of
    HISTORY_SEGMENT_LINES lines: object stores cannot append, and rewriting one growing file on every report cost
    O(reports^2) bytes over a run; a full segment is never written again."""
    return storage.path(job.name, "history")


HISTORY_PART = re.compile(r"part-\d{5,}\.jsonl")


def history_segment(index: int) -> str:
    return f"part-{index:05d}.jsonl"


def legacy_history_path(storage: Storage, job: BlockJob) -> str:
    """The single history file of runs written before segments (still read)."""
    return storage.path(job.name, "history.jsonl")


def previews_dir(storage: Storage) -> str:
    """Where rank 0 of each block writes its preview images."""
    return storage.path("previews")

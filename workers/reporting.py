"""Where a training loop sends metrics and checkpoints: a tiny protocol with null and list implementations.

The Ray implementation lives in `workers/ray_entry.py` (the only Ray-aware module).
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Protocol


class Reporter(Protocol):
    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        """Record metrics, and (if given) persist the checkpoint directory before returning."""


class NullReporter:
    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        pass


class ListReporter:
    """Keeps every report in memory and a copy of the latest checkpoint (for tests and local runs)."""

    def __init__(self, keep_dir: str | Path | None = None):
        self.metrics: list[dict] = []
        self.checkpoints: list[int] = []
        self.keep_dir = Path(keep_dir or tempfile.mkdtemp(prefix="dblocks-ckpt-"))
        self.latest_checkpoint: Path | None = None

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        self.metrics.append(dict(metrics))
        if checkpoint_dir is not None:
            target = self.keep_dir / f"step_{metrics['step']:08d}"
            shutil.copytree(checkpoint_dir, target, dirs_exist_ok=True)
            self.checkpoints.append(metrics["step"])
            self.latest_checkpoint = target


class ProgressFileReporter:
    """Writes the latest metrics as JSON to a file on the shared storage, atomically, and appends them to
    `history.jsonl` beside it (the loss curves). The coordinator polls the file for live progress, so workers
    never need a Redis connection."""

    def __init__(self, path: str | Path, node: str | None = None):
        self.path = Path(path)
        self.node = node or socket.gethostname()

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        line = json.dumps({**metrics, "node": self.node})
        with open(self.path.with_name("history.jsonl"), "a") as f:
            f.write(line + "\n")
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        tmp.write_text(line)
        tmp.replace(self.path)


class TeeReporter:
    """Sends every report to several reporters, in order."""

    def __init__(self, *reporters: Reporter):
        self.reporters = reporters

    def report(self, metrics: dict, checkpoint_dir: str | None = None) -> None:
        for reporter in self.reporters:
            reporter.report(metrics, checkpoint_dir)

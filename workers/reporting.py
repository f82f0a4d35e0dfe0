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
    def report(self, metrics: dict) -> None:
        """Record metrics. Cheap and local: called every `log_every_steps`, never a collective."""

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        """Persist a checkpoint before returning. A collective: every rank calls it, rank 0 with the directory."""


class NullReporter:
    def report(self, metrics: dict) -> None:
        pass

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        pass


class ListReporter:
    """Keeps every report in memory and a copy of the latest checkpoint (for tests and local runs)."""

    def __init__(self, keep_dir: str | Path | None = None):
        self.metrics: list[dict] = []
        self.checkpoints: list[int] = []
        self.keep_dir = Path(keep_dir or tempfile.mkdtemp(prefix="dblocks-ckpt-"))
        self.latest_checkpoint: Path | None = None

    def report(self, metrics: dict) -> None:
        self.metrics.append(dict(metrics))

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        self.metrics.append(dict(metrics))
        if directory is not None:
            target = self.keep_dir / f"step_{metrics['step']:08d}"
            shutil.copytree(directory, target, dirs_exist_ok=True)
            self.checkpoints.append(metrics["step"])
            self.latest_checkpoint = target


class ProgressFileReporter:
    """Writes the latest metrics as JSON to a file on the shared storage, atomically, and appends them to
    `history.jsonl` beside it (the loss curves). The coordinator polls the file for live progress, so workers
    never need a Redis connection."""

    def __init__(self, path: str | Path, node: str | None = None):
        self.path = Path(path)
        self.node = node or socket.gethostname()

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        self.report(metrics)

    def report(self, metrics: dict) -> None:
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

    def report(self, metrics: dict) -> None:
        for reporter in self.reporters:
            reporter.report(metrics)

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        for reporter in self.reporters:
            reporter.checkpoint(metrics, directory)

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

from shared.storage import Storage


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
        self.keep_dir = Path(keep_dir or tempfile.mkdtemp(prefix="dblocks-ckpt-"))
        self.latest_checkpoint: Path | None = None

    def report(self, metrics: dict) -> None:
        self.metrics.append(dict(metrics))

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        self.metrics.append(dict(metrics))
        if directory is not None:
            target = self.keep_dir / f"step_{metrics['step']:08d}"
            shutil.copytree(directory, target, dirs_exist_ok=True)
            self.latest_checkpoint = target


class ProgressFileReporter:
    """Writes the latest metrics as one JSON object to `progress_path` on the checkpoint storage (local or S3),
    and every report to `history_path` (JSON lines: the loss curves). Each write replaces the whole object, so a
    reader never sees half of one; a restarted worker picks the history up where it was. The coordinator polls
    the progress file, so workers never need a Redis connection."""

    def __init__(self, storage: Storage, progress_path: str, history_path: str, node: str | None = None):
        self.storage, self.progress_path, self.history_path = storage, progress_path, history_path
        self.node = node or socket.gethostname()
        self.history = storage.read_text(history_path) if storage.exists(history_path) else ""

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        self.report(metrics)

    def report(self, metrics: dict) -> None:
        line = json.dumps({**metrics, "node": self.node})
        self.history += line + "\n"
        self.storage.write_text(self.history_path, self.history)
        self.storage.write_text(self.progress_path, line)


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

"""Where a training loop sends metrics and checkpoints: a tiny protocol with null and list implementations.

The Ray implementations: `workers/ray_entry.py` (a block actor's), `workers/ray_train.py` (Ray Train's).
"""

from __future__ import annotations

import json
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Protocol

from shared.job import HISTORY_PART, HISTORY_SEGMENT_LINES, history_segment
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
    and every report to the history under `history_dir` (JSON lines in segments of HISTORY_SEGMENT_LINES: the loss
    curves; each report rewrites only the current segment). Each write replaces a whole object, so a reader never
    sees half of one; a restarted worker goes on in its last segment. The coordinator polls the progress file, so
    workers never need a Redis connection."""

    def __init__(self, storage: Storage, progress_path: str, history_dir: str, node: str | None = None):
        self.storage, self.progress_path, self.history_dir = storage, progress_path, history_dir
        self.node = node or socket.gethostname()
        parts = sorted(n for n in storage.list_names(history_dir) if HISTORY_PART.fullmatch(n))
        self.segment, self.lines = len(parts), []
        if parts:
            last = storage.read_text(f"{history_dir}/{parts[-1]}").splitlines(keepends=True)
            if len(last) < HISTORY_SEGMENT_LINES:  # not full: go on in it
                self.segment, self.lines = len(parts) - 1, last

    def checkpoint(self, metrics: dict, directory: str | None) -> None:
        self.report(metrics)

    def report(self, metrics: dict) -> None:
        line = json.dumps({**metrics, "node": self.node})
        self.lines.append(line + "\n")
        self.storage.write_text(f"{self.history_dir}/{history_segment(self.segment)}", "".join(self.lines))
        if len(self.lines) >= HISTORY_SEGMENT_LINES:
            self.segment, self.lines = self.segment + 1, []
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

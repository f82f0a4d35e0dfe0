"""Resumable checkpoints of a block trained in its own job actor (a single-worker block: no Ray Train run).

Layout on the run's checkpoint storage (a path or s3://, `shared/storage.py`):

    <job name>/actor/checkpoint_<step, 9 digits>/   a training-state directory (shared/checkpoint.py)
    <job name>/actor/latest.json                    {"path": <that directory>, "step": <step>}

A checkpoint's files are written first and the pointer last (one whole-object write), so a reader that follows the
pointer never finds half a checkpoint; a crash between the two leaves the previous checkpoint in force. The newest
`keep` directories stay; older ones are removed after the pointer has moved past them. A Ray Train run (data-parallel
blocks) keeps its own checkpoints beside this folder, under the same job name.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

from shared.checkpoint import load_training_state
from shared.job import BlockJob
from shared.storage import Storage

POINTER = "latest.json"
CHECKPOINT_DIR = re.compile(r"checkpoint_\d{9}")


class ActorCheckpoints:
    def __init__(self, storage: Storage, job: BlockJob, keep: int = 2):
        self.storage, self.keep = storage, keep
        self.root = storage.path(job.name, "actor")

    def latest(self) -> str | None:
        """The storage path of the newest complete checkpoint, or None before the first."""
        pointer = f"{self.root}/{POINTER}"
        if not self.storage.exists(pointer):
            return None
        return json.loads(self.storage.read_text(pointer))["path"]

    def load(self) -> dict | None:
        """The newest checkpoint's training state (`load_training_state`), or None before the first."""
        path = self.latest()
        if path is None:
            return None
        with tempfile.TemporaryDirectory(prefix="dblocks-resume-") as tmp:
            self.storage.download_dir(path, Path(tmp))
            return load_training_state(tmp)

    def save(self, directory: str, step: int) -> str:
        """Store the training-state `directory` as the checkpoint of `step`; returns its storage path."""
        path = f"{self.root}/checkpoint_{step:09d}"
        self.storage.upload_dir(Path(directory), path)
        self.storage.write_text(f"{self.root}/{POINTER}", json.dumps({"path": path, "step": step}))
        for name in [n for n in self.storage.list_dirs(self.root) if CHECKPOINT_DIR.fullmatch(n)][: -self.keep]:
            if f"{self.root}/{name}" != path:
                self.storage.delete_dir(f"{self.root}/{name}")
        return path

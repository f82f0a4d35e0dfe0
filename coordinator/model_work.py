"""Work on assembled models in worker processes, never in the coordinator's: the API's fresh samples and
predictions, and a finished run's artefacts (its samples and pictures, `RunReconciler.finish`).

Sampling a model is thousands of small torch calls, each holding the GIL for its Python part: run in the service's
threads, two of them starved the event loop and the reconcile loop (`dblocks bench api`: a status read's p99 and the
tick's time grew with every sampler). Here each runs in one of `slots` spawned processes at a lower CPU priority
(nice 10), with at most half the host's cores between them, so training and the service's own work come first; and
a model too big for memory takes down a worker, not the coordinator.

A worker loads the model from the run's directory, as the service did; what it returns (tensors, texts) is small.
Tasks registered in the service at run time (plugins, tests) travel with each call, by reference to their classes,
and are registered in the worker before the config is parsed. A worker that dies (killed, out of memory) is
replaced by a fresh pool at the next call; its own call fails as `WorkerLost`.
"""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

NICENESS = 10


class WorkerLost(RuntimeError):
    """The worker process running a call died before it answered."""


def _background(threads: int) -> None:
    """Each worker's start: a lower CPU priority, and its share of the cores."""
    os.nice(NICENESS)
    import torch

    torch.set_num_threads(threads)


def _in_worker(registered: tuple, fn, args: tuple, kwargs: dict):
    """In a worker: `fn(*args, **kwargs)`, with the task of the work registered first (a plugin's, a test's)."""
    from shared.tasks import TASKS
    from shared.tasks.outputs import OUTPUTS

    task_cls, outputs = registered
    TASKS.setdefault(task_cls.name, task_cls)
    OUTPUTS.setdefault(outputs.name, outputs)
    return fn(*args, **kwargs)


def outputs_call(run_dir: str, config_yaml: str, method: str, kwargs: dict):
    """The run's task's `Outputs.<method>(run_dir, config, **kwargs)`."""
    import yaml

    from shared.config import parse_config
    from shared.tasks.outputs import outputs_for

    config = parse_config(yaml.safe_load(config_yaml), stored=True)
    return getattr(outputs_for(config), method)(Path(run_dir), config, **kwargs)


class ModelWork:
    """A lazily started pool of `slots` worker processes (spawned: the service's threads are not forked)."""

    def __init__(self, slots: int):
        self.slots = slots
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                threads = max(1, (os.cpu_count() or 2) // (2 * self.slots))
                self._pool = ProcessPoolExecutor(
                    self.slots, mp_context=multiprocessing.get_context("spawn"), initializer=_background,
                    initargs=(threads,),
                )  # fmt: skip
            return self._pool

    def run(self, task: str, fn, *args, **kwargs):
        """`fn(*args, **kwargs)` (a module-level function) in a worker, where `task` (a registered name) is known;
        its exceptions are raised here as they were there, `WorkerLost` if the worker died."""
        from shared.tasks import TASKS
        from shared.tasks.outputs import OUTPUTS

        pool = self._executor()
        try:
            return pool.submit(_in_worker, (TASKS[task], OUTPUTS[task]), fn, args, kwargs).result()
        except BrokenProcessPool:
            with self._lock:
                if self._pool is pool:
                    self._pool = None
            pool.shutdown(wait=False, cancel_futures=True)
            raise WorkerLost("the worker process working on this model died; retry") from None

    def call(self, run_dir: Path, config_yaml: str, task: str, method: str, **kwargs):
        """`method` of the outputs of `task` on the run in `run_dir`, in a worker."""
        return self.run(task, outputs_call, str(run_dir), config_yaml, method, kwargs)

    def pids(self) -> list[int]:
        """The worker processes running now (none before the first call)."""
        with self._lock:
            return sorted((self._pool._processes or {}).keys()) if self._pool is not None else []

    def shutdown(self) -> None:
        """Stop the workers now, work in progress too (as the service's own threads stopped with it: a run whose
        artefacts were being made is assembled again by the next coordinator); a later call starts new ones."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            for process in list((pool._processes or {}).values()):
                process.terminate()
            pool.shutdown(wait=True, cancel_futures=True)


_SHARED = ModelWork(slots=2)


def shared_model_work() -> ModelWork:
    """The process's pool: every app in a process (one in a service, many in a test session) shares its workers."""
    return _SHARED

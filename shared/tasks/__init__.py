"""Tasks: what a block learns to denoise. One module per task, each implementing `shared.tasks.base.Task`.

The coordinator, the worker, the checkpoint format and the API carry the task's name (`Config.task`) and its
options (`Task.options`, JSON, saved in every block file's metadata) and call this interface; adding a task touches
its own module, its config section and its docs.
"""

from __future__ import annotations

from shared.tasks.base import Task
from shared.tasks.classification import Classification
from shared.tasks.image_generation import ImageGeneration
from shared.tasks.text import MaskedDiffusionText

TASKS: dict[str, type] = {cls.name: cls for cls in (ImageGeneration, Classification, MaskedDiffusionText)}


def get_task(name: str, options: dict | None = None) -> Task:
    """The task `name` with its options (as a block file's metadata holds them; None: the defaults)."""
    if name not in TASKS:
        raise ValueError(f"task {name!r} does not exist; available: {sorted(TASKS)}")
    try:
        return TASKS[name](**(options or {}))
    except TypeError as err:
        raise ValueError(f"task {name!r}: bad options {options!r}: {err}") from None


def task_for(config) -> Task:
    """The task a config trains, with the options its config section sets."""
    cls = TASKS[config.task]
    return cls(**cls.options_from(config))

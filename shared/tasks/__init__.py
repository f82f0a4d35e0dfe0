"""Tasks: what a block learns to denoise. One module per task, each implementing `shared.tasks.base.Task`.

The coordinator, the worker, the checkpoint format and the API carry the task's name (`Config.task`) and call
this interface; adding a task touches its own module, its config section and its docs.
"""

from __future__ import annotations

from shared.tasks.base import Task
from shared.tasks.classification import Classification
from shared.tasks.image_generation import ImageGeneration

TASKS: dict[str, Task] = {task.name: task for task in (ImageGeneration(), Classification())}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"task {name!r} does not exist; available: {sorted(TASKS)}")
    return TASKS[name]

"""Tasks: what a block learns to denoise. One folder per task (`shared/tasks/<name>/`: `task.py` implements
`shared.tasks.base.Task`; `config.py`, if any, is the config section it owns). docs/tasks.md.

The core looks a task up here by the run's `task` name, once, and then only calls the interface: the worker, the
plan, the assembly, the checkpoint format (the name and `Task.options` in every block file), the coordinator, the
API and the CLI never compare the name (tests/test_layering.py pins it). A new task is a new folder and one line in
`TASKS` (or `register(cls)`, for a task defined elsewhere).
"""

from __future__ import annotations

from shared.data.resolve import confine_sources
from shared.pretrained import init_sources, resolve_init
from shared.tasks.autoregressive.task import Autoregressive
from shared.tasks.base import PREDICT, PROMPTS, SAMPLES_PNG, SAMPLES_TXT, Task
from shared.tasks.classification.task import Classification
from shared.tasks.image_generation.task import ImageGeneration
from shared.tasks.recurrent_depth.task import RecurrentDepth
from shared.tasks.text.task import MaskedDiffusionText

TASKS: dict[str, type[Task]] = {
    cls.name: cls for cls in (ImageGeneration, Classification, MaskedDiffusionText, Autoregressive, RecurrentDepth)
}
LEGACY_TASK = ImageGeneration.name  # the task of block files and manifests written before tasks existed

__all__ = ["LEGACY_TASK", "PREDICT", "PROMPTS", "SAMPLES_PNG", "SAMPLES_TXT", "TASKS", "Task", "get_task", "register"]


def register(cls: type[Task]) -> type[Task]:
    """Add a task defined outside this package (a plugin, a test); usable as a class decorator."""
    if cls.name in TASKS and TASKS[cls.name] is not cls:
        raise ValueError(f"task {cls.name!r} is already registered")
    TASKS[cls.name] = cls
    return cls


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


def task_sources(config) -> list[tuple[str, str]]:
    """(field, path) of everything the config's run reads: its task's data sources, and the checkpoint it starts
    from (`init.checkpoint`)."""
    return TASKS[config.task].sources(config) + init_sources(config)


def resolve_data(config, *, roots: tuple[str, ...] | None = None):
    """The config with its data facts (and its checkpoint's, `shared.pretrained`) filled in, after validating them;
    DataError (or InitError) names what is wrong. `roots`: the folders and s3:// prefixes a service caller may read
    (None: the machine's own user, unconfined)."""
    cls = TASKS[config.task]
    if roots is not None:
        config = confine_sources(config, task_sources(config), roots)
    return resolve_init(cls.resolve_data(config, confined=roots is not None), task_for, roots)

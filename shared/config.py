"""Typed run configuration (pydantic v2): frozen, keyword-only, unknown fields rejected, parsed once.

`load_config(path, overrides)` is the one entry point; errors come out as `ConfigError` whose message names
each bad field (`blocks.num_blocks: ...`). Nothing else in the project reads YAML config.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

import yaml
from pydantic import Field, ValidationError, create_model, field_validator, model_validator

from shared.config_base import (
    CROSS_FIELD_BOUNDS,
    EQUAL_STEPS,
    MAX_BLOCKS,
    MAX_LAYERS,
    MAX_SAMPLE_STEPS,
    MAX_SAMPLES_PER_CLASS,
    MAX_SAMPLES_PER_RUN,
    MAX_SEED,
    MAX_STEPS,
    ConfigError,
    Section,
)
from shared.data.builtin import DATASETS
from shared.data.config import DataConfig
from shared.partition import split_layers
from shared.pretrained.config import InitConfig
from shared.sections import (
    BlockResources,
    BlocksConfig,
    ModelConfig,
    NoiseConfig,
    ResourcesConfig,
    SampleConfig,
    TrainConfig,
    WorkerResources,
)
from shared.tasks import TASKS

__all__ = [
    "CROSS_FIELD_BOUNDS",
    "EQUAL_STEPS",
    "MAX_BLOCKS",
    "MAX_LAYERS",
    "MAX_SAMPLE_STEPS",
    "MAX_SAMPLES_PER_CLASS",
    "MAX_SAMPLES_PER_RUN",
    "MAX_SEED",
    "MAX_STEPS",
    "BlockResources",
    "BlocksConfig",
    "DataConfig",
    "InitConfig",
    "Config",
    "ModelConfig",
    "NoiseConfig",
    "ResourcesConfig",
    "SampleConfig",
    "TrainConfig",
    "WorkerResources",
    "ConfigError",
    "config_class",
    "load_config",
    "parse_config",
]


DEFAULT_TASK = "image_generation"


class Config(Section):
    """A run: the task, its data, network, partition, noise, training, resources and sampling: the sections every
    task shares. A task with options of its own (`Task.section`, e.g. `text`) gets its run config from
    `config_class(task)`: this class plus that one section, so a run carries its own task's section and no other.
    `parse_config` picks the class by the raw config's `task`."""

    task: str = Field(
        DEFAULT_TASK,
        description="What the blocks learn to denoise, one of the registered tasks (shared/tasks/): images "
        "(image_generation), class labels given an image (classification, by label denoising) or masked text "
        "(text, MD4 language modelling). docs/tasks.md.",
        json_schema_extra={"enum": sorted(TASKS)},
    )
    name: str = Field(
        "run", pattern=r"^[A-Za-z0-9_-]{1,40}$", description="Run name prefix (letters, digits, _ and -)."
    )
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    blocks: BlocksConfig = BlocksConfig()
    noise: NoiseConfig = NoiseConfig()
    train: TrainConfig = TrainConfig()
    resources: ResourcesConfig = ResourcesConfig()
    sample: SampleConfig = SampleConfig()
    init: InitConfig = InitConfig()

    @field_validator("task")
    @classmethod
    def _registered(cls, name: str) -> str:
        if name not in TASKS:
            raise ValueError(f"task {name!r} does not exist; available: {sorted(TASKS)}")
        return name

    @model_validator(mode="before")
    @classmethod
    def _own_section_only(cls, data):
        """Another task's section is refused naming it (a run carries its own task's section and no other)."""
        if isinstance(data, dict) and isinstance(data.get("task", DEFAULT_TASK), str):
            name = data.get("task", DEFAULT_TASK)
            own = TASKS[name].section if name in TASKS else None
            for task in TASKS.values():
                if task.section not in (None, own) and task.section in data:
                    raise ValueError(f"{task.section}: the section of another task; this run's task is {name}")
        return data

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        size = self.data.image_size if self.data.source is not None else DATASETS[self.data.dataset].image_size
        if size is not None and size % self.model.patch_size:
            name = self.data.source or self.data.dataset
            raise ValueError(
                f"model.patch_size {self.model.patch_size} does not divide the image size {size} of {name}"
            )
        blocks = self.blocks
        try:  # the one rule for splitting layers into blocks lives in shared/partition.py
            split_layers(self.model.num_layers, blocks.num_blocks, blocks.layers)
        except ValueError as err:
            field = "blocks.layers" if blocks.layers is not None else "blocks.num_blocks"
            raise ValueError(f"{field}: {err}") from None
        task = TASKS[self.task]
        if type(self) is not config_class(self.task):
            raise ValueError(
                f"task {self.task}: its run config is shared.config.config_class({self.task!r}) (with its "
                f"{task.section} section); parse configs with shared.config.parse_config"
            )
        if self.noise.axis not in task.noise_axes:
            raise ValueError(
                f"noise.axis {self.noise.axis}: task {self.task} trains on {' or '.join(sorted(task.noise_axes))}"
            )
        task.check_config(self)
        planned = self.planned_blocks
        for field, indices, count in (
            ("resources.per_block", self.resources.per_block, planned),
            ("train.block_step_scale", self.train.block_step_scale, blocks.num_blocks),  # the block-wise plan's
        ):
            for index in indices:
                if not 0 <= index < count:
                    raise ValueError(
                        f"{field}.{index}: no such block; this plan has blocks 0..{count - 1} (name only those, "
                        f"or set {field}={{}})"
                    )
        self._work_bounded()
        for index, scale in self.train.block_step_scale.items():
            if self.train.steps_for(index) > MAX_STEPS:
                raise ValueError(
                    f"train.block_step_scale.{index}: {scale} x train.steps_per_block {self.train.steps_per_block} "
                    f"is more than {MAX_STEPS} steps"
                )
        return self

    def _work_bounded(self) -> None:
        """The products of fields that size work (CROSS_FIELD_BOUNDS), each refused naming its fields."""
        d = self.data
        if d.num_classes is not None:
            classes = d.num_classes
        else:  # a source's classes are known once it is resolved, and checked again then
            classes = DATASETS[d.dataset].num_classes if d.source is None else 0
        if classes * self.sample.num_per_class > MAX_SAMPLES_PER_RUN:
            raise ValueError(
                f"data.num_classes {classes} x sample.num_per_class {self.sample.num_per_class} is more than "
                f"{MAX_SAMPLES_PER_RUN:,} samples"
            )
        if d.channels is not None and d.image_size is not None:
            buffered = d.shuffle_buffer * d.channels * d.image_size**2 * 4
            if buffered > d.memory_limit_mb * 2**20:
                raise ValueError(
                    f"data.shuffle_buffer {d.shuffle_buffer} x {d.channels}x{d.image_size}x{d.image_size} records "
                    f"needs {buffered / 2**20:,.0f} MiB, more than data.memory_limit_mb {d.memory_limit_mb}"
                )
        if d.loader != "stream":
            for index in range(self.planned_blocks):
                reserved_mb = self.resources.for_block(index).memory_bytes / 2**20
                if 0 < reserved_mb < d.memory_limit_mb:
                    raise ValueError(
                        f"data.memory_limit_mb {d.memory_limit_mb} is more than block {index}'s reserved memory "
                        f"({reserved_mb:,.0f} MiB, resources.memory_gb_per_block): lower it, or set data.loader "
                        "stream"
                    )

    def layer_counts(self) -> list[int]:
        """Layers of each planned block: the explicit `blocks.layers` split of a block-wise plan, else equal."""
        n = self.planned_blocks
        return split_layers(self.model.num_layers, n, self.blocks.layers if n == self.blocks.num_blocks else None)

    @property
    def planned_blocks(self) -> int:
        """Blocks this config trains: end_to_end is the B = 1 plan (one network, all layers, the whole range)."""
        return 1 if self.train.mode == "end_to_end" else self.blocks.num_blocks

    def with_values(self, values: dict) -> Config:
        """A variant with `section.field` values set as values (not as YAML text: a path may hold `#` or `: `),
        validated like any other."""
        raw = self.model_dump()
        for key, value in values.items():
            section, field = key.split(".")
            raw[section][field] = value
        return parse_config(raw)

    def with_overrides(self, overrides: list[str]) -> Config:
        """A variant of this config with `section.field=value` overrides, validated like any other."""
        return parse_config(self.model_dump(), overrides)

    def hash(self) -> str:
        """sha256 of the canonical JSON of the fields that differ from their defaults: a config hashes the same
        whether or not it spells out a default, and adding an optional field later changes no existing hash. The
        price: changing a default's value changes no hash either, so never change a default silently (a new
        behaviour gets a new field); the benchmarks key their reuse on the full config (`bench.quality`)."""
        return hashlib.sha256(json.dumps(self.model_dump(exclude_defaults=True), sort_keys=True).encode()).hexdigest()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(), sort_keys=False)


@functools.cache
def _run_config(task: type) -> type[Config]:
    if task.section is None:
        return Config
    cls = create_model(
        f"{task.__name__}RunConfig",
        __base__=Config,
        __module__=__name__,
        __doc__=f"The run config of task {task.name}: the shared sections and its own `{task.section}`.",
        **{task.section: (task.section_model, task.section_model())},
    )
    globals()[cls.__name__] = cls  # pickled by name, like a class written in this module
    return cls


def __getattr__(name: str):
    """A task's run config class by its name (as pickle looks it up in a fresh process)."""
    for task in TASKS.values():
        if f"{task.__name__}RunConfig" == name:
            return _run_config(task)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def config_class(task: str) -> type[Config]:
    """The run config class of a registered task: `Config`, plus the task's own section if it has one."""
    if task not in TASKS:
        raise ValueError(f"task {task!r} does not exist; available: {sorted(TASKS)}")
    return _run_config(TASKS[task])


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `section.field=value` overrides (value parsed as YAML) to a raw config dict."""
    merged = json.loads(json.dumps(raw))
    for item in overrides:
        key, sep, value = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(parts):
            raise ConfigError(f"--set {item!r}: expected section.field=value")
        node = merged
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return merged


def _error_items(err: ValidationError) -> list[dict]:
    """One `{"loc", "msg", "type"}` per bad field, messages as a person reads them."""
    items = []
    for e in err.errors():
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        loc = list(e["loc"])
        named = re.match(r"([a-z_]+(?:\.[a-z_0-9]+)*): ", msg)
        if not loc and named:  # a rule across fields that names its field: located there
            loc, msg = named.group(1).split("."), msg[named.end() :]
        items.append({"loc": loc, "msg": msg, "type": e["type"]})
    return items


def _format_error(err: ValidationError) -> str:
    lines = [f"{'.'.join(str(p) for p in e['loc']) or 'config'}: {e['msg']}" for e in _error_items(err)]
    return "invalid config:\n  " + "\n  ".join(lines)


def _without_default_sections(raw: dict) -> dict:
    """A stored config without other tasks' sections at their defaults: runs stored before each task had its own
    run config spelled out every task's section."""
    name = raw.get("task", DEFAULT_TASK)
    own = TASKS[name].section if isinstance(name, str) and name in TASKS else None
    drop = {
        t.section
        for t in TASKS.values()
        if t.section not in (None, own) and raw.get(t.section) == t.section_model().model_dump()
    }
    return {key: value for key, value in raw.items() if key not in drop}


def parse_config(raw: dict | None, overrides: list[str] = (), *, stored: bool = False) -> Config:
    """Validate a raw dict (plus overrides) into a Config, or raise ConfigError naming each bad field. `stored`: a
    config this service wrote earlier (a run's config.yaml, a stored run), read as it was written then."""
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError("invalid config: the top level must be a mapping of sections")
    merged = apply_overrides(raw or {}, list(overrides))
    if stored:
        merged = _without_default_sections(merged)
    name = merged.get("task", DEFAULT_TASK)
    cls = config_class(name) if isinstance(name, str) and name in TASKS else Config  # Config names a bad task
    try:
        return cls.model_validate(merged)
    except ValidationError as err:
        raise ConfigError(_format_error(err), _error_items(err)) from None


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read a YAML config file, apply overrides, validate."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from None
    return parse_config(raw, overrides)

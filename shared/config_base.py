"""What every config section is built from: the error type, the field bounds shared across sections, and the
section base class (frozen, unknown fields refused, numbers finite and never booleans). Task folders build their
own sections on it (`shared/tasks/<name>/config.py`); `shared/config.py` assembles the run config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator


class ConfigError(ValueError):
    """A config that cannot be run; the message names the field and the reason. `errors`: one
    `{"loc": [...], "msg", "type"}` per bad field (the API's error items)."""

    def __init__(self, message: str, errors: list[dict] | None = None):
        super().__init__(message)
        self.errors = errors if errors is not None else [{"loc": [], "msg": message, "type": "invalid_config"}]


# Bounds of every field (docs/generated/config.md, docs/security.md): generous for real work, small enough that no
# derived quantity (memory, steps, sample counts, seeds) overflows or stalls the service.
# Seeds are JSON-safe integers (exact in a double, so every HTTP client reads and writes them unchanged); torch
# generators take anything below 2**64, and block seeds are derived into 63 bits from these.
MAX_SEED = 2**53 - 1
MAX_LAYERS = 256
MAX_BLOCKS = 64
MAX_STEPS = 10_000_000
# The override a benchmark adds to compare at equal steps per block: a base config's per-block budgets
# (`train.block_step_scale`, the quickstart's) are dropped, so every block trains `train.steps_per_block`.
EQUAL_STEPS = "train.block_step_scale={}"
MAX_SAMPLES_PER_CLASS = 64
MAX_SAMPLE_STEPS = 1000
# Products of fields that size one piece of work (docs/generated/config.md, "Bounds across fields"; docs/security.md):
MAX_SAMPLES_PER_RUN = 10_000  # images one sample grid draws: classes x samples per class (ImageNet's 1,000 x 10)
MAX_EVAL_SYMBOLS = 2**28  # symbols one text evaluation may read: eval_max_samples x seq_len (5x the default)
CROSS_FIELD_BOUNDS = (
    f"`data.num_classes` x `sample.num_per_class` <= {MAX_SAMPLES_PER_RUN:,} (also for on-demand samples)",
    f"`text.eval_max_samples` x `text.seq_len` <= {MAX_EVAL_SYMBOLS:,}",
    "`data.shuffle_buffer` x one decoded record (channels x image_size^2 x 4 bytes) <= `data.memory_limit_mb`",
    "`data.memory_limit_mb` <= each block's reserved memory (`resources.memory_gb_per_block` or the block's "
    "`per_block` entry), when one is reserved and `data.loader` is not `stream`",
    "`train.block_step_scale.<b>` x `train.steps_per_block` <= 10,000,000 steps",
)


NUMBERS = (int, float, int | None, float | None)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers_are_not_booleans(cls, value, info):
        """pydantic's lax mode reads true/false as 1/0 for a number, and 0, 1, "yes", "off" as a boolean: a config
        that says `num_steps: false` or `compile: 0` means something else, so both are refused (strict mode would
        also refuse YAML's `lr: 1e-3`, a string to PyYAML)."""
        annotation = cls.model_fields[info.field_name].annotation
        if isinstance(value, bool) and annotation in NUMBERS:
            raise ValueError("expected a number, got a boolean")
        if annotation is bool and not isinstance(value, bool):
            raise ValueError(f"expected true or false, got {value!r}")
        return value

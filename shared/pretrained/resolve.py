"""Resolving `init.checkpoint` once at submit, and loading a block's slice of it in the worker (the package
docstring says the flow)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import torch

from shared.checkpoint import sha256_file
from shared.data.paths import confine
from shared.model import NetSpec, sincos_2d
from shared.pretrained.config import InitConfig
from shared.pretrained.mapping import DIFFUSERS_EMB, Take, UnmappedTensor, block_takes, convert, source_shape
from shared.pretrained.sources import InitError, Source, open_source

IMPORTS = ("diffusers", "dit")  # formats of other projects' networks (image generation's BlockNet layout)


def init_sources(config) -> list[tuple[str, str]]:
    """(field, path) of the checkpoint a run starts from, confined like a data source for a service caller."""
    return [("init.checkpoint", config.init.checkpoint)] if config.init.checkpoint is not None else []


def conventions(source: Source) -> dict:
    """The `NetSpec` conventions of the source's network (its position table, noise embedding, LayerNorm eps)."""
    if source.format == "run":
        net = source.meta["net"]
        return {
            "pos_axes": net.get("pos_axes", "yx"),
            "freq_shift": net.get("freq_shift", 0),
            "norm_eps": net.get("norm_eps", 1e-6),
        }
    if source.format == "diffusers":
        return {"pos_axes": "xy", "freq_shift": 1, "norm_eps": float(source.config.get("norm_eps", 1e-5))}
    return {"pos_axes": "xy", "freq_shift": 0, "norm_eps": 1e-6}


def resolve_init(config, task_for: Callable, roots: tuple[str, ...] | None = None):
    """The config with its checkpoint's facts filled in (`init.*`), after checking the checkpoint fits every
    planned block; InitError naming the field and the reason otherwise. A config without one is returned as is.
    `task_for(config)`: the run's task (`shared.tasks.task_for`; passed in: the tasks import this package).
    `roots`: a service caller's data roots (the path itself is already confined): the weights file the path leads
    to (a manifest's block file, a folder's weights, through symlinks) must lie under them too."""
    init = config.init
    if init.checkpoint is None:
        return config
    if init.checkpoint.startswith("s3://"):
        raise InitError("init.checkpoint: read from a local (or mounted) path; s3:// checkpoints are not read yet")
    path = Path(init.checkpoint).absolute()
    source = open_source(path, init.format, init.weights)
    if roots is not None:
        confine(os.path.realpath(source.weights_file), roots, "init.checkpoint")
    formats = task_for(config).init_formats
    if source.format not in formats:
        raise InitError(
            f"init.checkpoint: a {source.format} checkpoint cannot start a {config.task} run (it takes "
            f"{', '.join(sorted(formats))})"
        )
    prediction = init.prediction if source.format != "run" else "auto"
    if source.format in IMPORTS and prediction == "auto":
        prediction = "eps"
    resolved = config.with_values(
        {
            "init.checkpoint": str(path),
            "init.format": source.format,
            "init.prediction": prediction,
            "init.sha256": sha256_file(source.weights_file),
            **{f"init.{key}": value for key, value in conventions(source).items()},
        }
    )
    check_source(resolved, source, task_for(resolved))
    return resolved


def block_layers(config) -> list[tuple[int, int]]:
    """(first layer, layers) of each planned block."""
    counts = config.layer_counts()
    return [(sum(counts[:b]), counts[b]) for b in range(len(counts))]


def check_source(config, source: Source, task) -> None:
    """Everything that must hold before a block starts from `source`: the same kind of model, the same depth,
    the fixed tables the block recomputes, and every planned block's tensors present with their shapes."""
    if source.format == "run":
        check_run(config, source, task)
    if source.format == "dit" and "pos_embed" in source.names():
        spec = task.net_spec(config, 1)
        table = sincos_2d(spec.image_size // spec.patch_size, spec.hidden_size, "xy")
        got = source.tensor("pos_embed")
        if got.numel() != table.numel() or not torch.allclose(got.reshape(table.shape).float(), table, atol=1e-4):
            raise InitError("init.checkpoint: pos_embed is not DiT's fixed sine-cosine table for this image size")
    if source.format == "diffusers":
        check_shared_conditioning(source)
    depth = source_depth(source)
    if depth != config.model.num_layers:
        raise InitError(f"model.num_layers {config.model.num_layers}: the checkpoint has {depth} layers")
    if source.format == "diffusers":
        heads = source.config.get("num_attention_heads")
        if heads != config.model.num_heads:
            raise InitError(f"model.num_heads {config.model.num_heads}: the checkpoint's config.json says {heads}")
    for index, (layer_start, num_layers) in enumerate(block_layers(config)):
        check_block(config, source, task, index, layer_start, task.net_spec(config, num_layers))


def check_run(config, source, task) -> None:
    meta = source.meta
    if meta.get("task", config.task) != config.task:  # (files from before tasks existed: image generation)
        raise InitError(f"init.checkpoint: the run trained task {meta.get('task')}; this run's task is {config.task}")
    ours, theirs = task.options, meta.get("task_options", {})
    differ = sorted(k for k in {*ours, *theirs} if k != "loss" and ours.get(k) != theirs.get(k))
    if differ:
        raise InitError(
            f"init.checkpoint: the run's task has {differ[0]} {theirs.get(differ[0])!r}, this run's "
            f"{ours.get(differ[0])!r} (noise.axis, the task's section): blocks start from a network of their own kind"
        )


def check_shared_conditioning(source) -> None:
    """Every diffusers layer must hold the same conditioning embedder (as converted DiT weights do): a block has
    one, and the head uses layer 0's."""
    names = sorted(n for n in source.names() if n.startswith(DIFFUSERS_EMB + "."))
    for name in names:
        first = source.tensor(name)
        for layer in range(1, source_depth(source)):
            other = name.replace("transformer_blocks.0.", f"transformer_blocks.{layer}.", 1)
            if other in source.names() and not torch.equal(source.tensor(other), first):
                raise InitError(
                    f"init.checkpoint: {other} differs from {name}; blocks share one conditioning embedder, as the "
                    "published DiT weights do"
                )


def source_depth(source) -> int:
    prefix = {"run": "layers.", "dit": "blocks.", "diffusers": "transformer_blocks."}[source.format]
    indices = {int(n[len(prefix) :].split(".")[0]) for n in source.names() if n.startswith(prefix)}
    return max(indices) + 1 if indices else 0


def _targets(task, net_spec: NetSpec) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        net = task.network(net_spec)
    return {name: tuple(t.shape) for name, t in net.state_dict().items()}


def plan_init(config, task, layer_start: int, net_spec: NetSpec) -> list[Take]:
    """Which source tensors a block of `task` starting at source layer `layer_start` takes (no file is read)."""
    if config.init.format == "auto":
        raise InitError(f"init.checkpoint {config.init.checkpoint}: not resolved yet (shared.tasks.resolve_data)")
    try:
        return block_takes(config.init.format, list(_targets(task, net_spec)), layer_start)
    except UnmappedTensor as err:
        hint = " (model.output_conv: an imported DiT has none)" if str(err).startswith("output_conv") else ""
        raise InitError(f"init.checkpoint: a {config.init.format} checkpoint has no tensor for {err}{hint}") from None


def check_block(config, source, task, index: int, layer_start: int, net_spec: NetSpec) -> None:
    targets = _targets(task, net_spec)
    channels = net_spec.channels or 1
    names = source.names()
    for item in plan_init(config, task, layer_start, net_spec):
        missing = [s for s in item.sources if s not in names]
        if missing:
            raise InitError(f"init.checkpoint: block {index}'s {item.target} takes {missing[0]}, which it lacks")
        got = source_shape(item, [source.shape(s) for s in item.sources], targets[item.target], channels)
        if got != targets[item.target]:
            raise InitError(
                f"init.checkpoint: block {index}'s {item.target} takes {item.describe()}: shape "
                f"{list(got) if got else [source.shape(s) for s in item.sources]} in the checkpoint, "
                f"{list(targets[item.target])} here (model, data and the checkpoint must describe one network)"
            )


def block_init_state(config, task, layer_start: int, net_spec: NetSpec) -> dict[str, torch.Tensor]:
    """The state dict a block of `task` starts from: its slice of the layers (from source layer `layer_start`) and
    its copies of the rest, read from the checkpoint the config resolved (refused if its bytes changed since)."""
    init = config.init
    source = open_source(init.checkpoint, init.format, init.weights)
    digest = sha256_file(source.weights_file)
    if digest != init.sha256:
        raise InitError(
            f"init.checkpoint: {source.weights_file} changed since the run was submitted (sha256 {digest[:12]}, "
            f"recorded {str(init.sha256)[:12]})"
        )
    targets = _targets(task, net_spec)
    channels = net_spec.channels or 1
    return {
        item.target: convert(item, [source.tensor(s) for s in item.sources], targets[item.target], channels)
        for item in plan_init(config, task, layer_start, net_spec)
    }


def net_conventions(init: InitConfig) -> dict:
    """The NetSpec fields a resolved `init` section sets (none without a checkpoint)."""
    values = {"pos_axes": init.pos_axes, "freq_shift": init.freq_shift, "norm_eps": init.norm_eps}
    return {key: value for key, value in values.items() if value is not None}


def describe(config) -> dict | None:
    """What the manifest and the evaluation record of a run's starting point (None: random init)."""
    init = config.init
    if init.checkpoint is None:
        return None
    return {"checkpoint": init.checkpoint, "format": init.format, "prediction": init.prediction, "sha256": init.sha256}

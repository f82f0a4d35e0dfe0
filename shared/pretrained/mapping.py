"""Which source tensor each tensor of a block takes: a pure function of the checkpoint's format, the block's tensor
names and its first layer, so `dblocks plan` shows it without reading a file. Block b holds layers
[start, start + n) of the source as its layers 0..n-1, and its own copies of the embeddings, conditioning and head.

Names map one to one except two: diffusers keeps attention's q, k and v apart (the block's `qkv` is their
concatenation), and a DiT that learned its variance has 2C output channels per pixel (the block's head keeps the
first C: the epsilon prediction)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

COPY, CONCAT, OUT_CHANNELS = "copy", "concat", "out_channels"


@dataclass(frozen=True)
class Take:
    target: str  # a tensor of the block network (`shared.model.BlockNet`)
    sources: tuple[str, ...]  # the source tensors it is made of
    op: str = COPY  # copy | concat (q, k, v along dim 0) | out_channels (the first C channels of each pixel)

    def describe(self) -> str:
        if self.op == CONCAT:
            return f"concat({', '.join(self.sources)})"
        if self.op == OUT_CHANNELS:
            return f"{self.sources[0]} (first channels per pixel)"
        return self.sources[0]


# The original DiT / SiT module names (x_embedder, t_embedder, y_embedder, blocks, final_layer).
DIT_SHARED = {
    "patch_embed": "x_embedder.proj",
    "noise_embed.0": "t_embedder.mlp.0",
    "noise_embed.2": "t_embedder.mlp.2",
    "class_embed": "y_embedder.embedding_table",
    "ada_out": "final_layer.adaLN_modulation.1",
    "head": "final_layer.linear",
}
DIT_LAYER = {
    "qkv": "attn.qkv",
    "proj": "attn.proj",
    "mlp.0": "mlp.fc1",
    "mlp.2": "mlp.fc2",
    "ada": "adaLN_modulation.1",
}

# diffusers' DiTTransformer2DModel: every layer holds a copy of the conditioning embedder (the published DiT
# weights repeat the one the original shares); the head's conditioning is layer 0's.
DIFFUSERS_EMB = "transformer_blocks.0.norm1.emb"
DIFFUSERS_SHARED = {
    "patch_embed": "pos_embed.proj",
    "noise_embed.0": f"{DIFFUSERS_EMB}.timestep_embedder.linear_1",
    "noise_embed.2": f"{DIFFUSERS_EMB}.timestep_embedder.linear_2",
    "class_embed": f"{DIFFUSERS_EMB}.class_embedder.embedding_table",
    "ada_out": "proj_out_1",
    "head": "proj_out_2",
}
DIFFUSERS_LAYER = {
    "qkv": ("attn1.to_q", "attn1.to_k", "attn1.to_v"),
    "proj": "attn1.to_out.0",
    "mlp.0": "ff.net.0.proj",
    "mlp.2": "ff.net.2",
    "ada": "norm1.linear",
}
LAYER_PREFIX = {"dit": "blocks", "diffusers": "transformer_blocks", "run": "layers"}
TABLES = {"dit": (DIT_SHARED, DIT_LAYER), "diffusers": (DIFFUSERS_SHARED, DIFFUSERS_LAYER)}


class UnmappedTensor(ValueError):
    """A block tensor the source format has no counterpart for (a module an imported DiT does not have)."""


def _split(name: str) -> tuple[str, str]:
    module, _, leaf = name.rpartition(".")
    return module, leaf


def take(format: str, target: str, layer_start: int) -> Take:
    """The source tensor(s) block tensor `target` takes, for a block whose layer 0 is the source's `layer_start`."""
    parts = target.split(".")
    if parts[0] == "layers":  # layers.<j>.<module...>.<leaf>
        source_layer = f"{LAYER_PREFIX[format]}.{layer_start + int(parts[1])}"
        if format == "run":
            return Take(target, (".".join([source_layer, *parts[2:]]),))
        module, leaf = _split(".".join(parts[2:]))
        mapped = TABLES[format][1].get(module)
        if mapped is None:
            raise UnmappedTensor(target)
        if isinstance(mapped, tuple):
            return Take(target, tuple(f"{source_layer}.{m}.{leaf}" for m in mapped), CONCAT)
        return Take(target, (f"{source_layer}.{mapped}.{leaf}",))
    if format == "run":
        return Take(target, (target,))
    module, leaf = _split(target)
    mapped = TABLES[format][0].get(module)
    if mapped is None:
        raise UnmappedTensor(target)
    return Take(target, (f"{mapped}.{leaf}",), OUT_CHANNELS if module == "head" else COPY)


def source_layers(format: str, layer_start: int, num_layers: int) -> list[str]:
    """The source's names of the layers a block takes (`blocks.4`, `transformer_blocks.4`, `layers.4`)."""
    return [f"{LAYER_PREFIX[format]}.{layer_start + j}" for j in range(num_layers)]


def block_takes(format: str, targets: list[str], layer_start: int) -> list[Take]:
    return [take(format, target, layer_start) for target in targets]


def convert(take: Take, tensors: list[torch.Tensor], target_shape: tuple[int, ...], channels: int) -> torch.Tensor:
    """The block's tensor from its source tensors (float32); `channels`: the block's output channels per pixel."""
    if take.op == CONCAT:
        out = torch.cat(tensors, dim=0)
    elif take.op == OUT_CHANNELS and tuple(tensors[0].shape) != tuple(target_shape):
        pixels = target_shape[0] // channels  # patch_size ** 2 output pixels per token, channels fastest
        out = tensors[0].reshape(pixels, -1, *tensors[0].shape[1:])[:, :channels].reshape(target_shape)
    else:
        out = tensors[0]
    return out.float().contiguous()


def source_shape(take: Take, shapes: list[tuple[int, ...]], target_shape: tuple[int, ...], channels: int):
    """The shape `convert` would give, from the source shapes alone (None: the source cannot give this tensor)."""
    if take.op == CONCAT:
        if any(s[1:] != shapes[0][1:] for s in shapes):
            return None
        return (sum(s[0] for s in shapes), *shapes[0][1:])
    if take.op == OUT_CHANNELS and shapes[0] != tuple(target_shape):
        pixels = target_shape[0] // channels
        if shapes[0][0] % pixels or shapes[0][0] // pixels < channels:
            return None
        return (pixels * channels, *shapes[0][1:])
    return shapes[0]

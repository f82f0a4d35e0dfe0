"""One block's network F: a DiT-style transformer with adaLN-Zero conditioning (Peebles & Xie 2023).

Every block owns PRIVATE copies of the patch embedding, noise embedder, class embedding and output head, so
blocks share nothing and train with zero communication (docs/method.md, "What a block is"). The net sees
c_in * z and c_noise only; EDM scaling lives in `shared.precond.Denoiser`.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True, kw_only=True)
class NetSpec:
    """Architecture of one block network — stored with every checkpoint so it is self-describing. The trunk's
    shape (width, heads, MLP ratio, layers) and `num_classes` (classes, or a sequence task's vocabulary) are
    every task's; the image fields default to "no image" and `seq_len` to "no sequence", so a task sets only the
    fields of its own input. (Keyword-only; the field order is the stored metadata's key order.)"""

    image_size: int = 0  # image tasks: side of the square image
    channels: int = 0  # image tasks: image channels
    num_classes: int
    patch_size: int = 1  # image tasks: patch side
    hidden_size: int
    num_heads: int
    mlp_ratio: float
    num_layers: int
    seq_len: int = 0  # sequence tasks (text): symbols per sequence; num_classes is then the vocabulary size
    output_conv: bool = False  # a 3x3 convolution over the un-patchified output (absent from older checkpoints)
    # Numerical conventions of an imported network (shared/pretrained/), so it computes exactly what it computed
    # before; this project's own networks keep the defaults:
    pos_axes: str = "yx"  # image tasks: the sine-cosine position table's halves, row (y) first; DiT's is "xy"
    freq_shift: int = 0  # the noise embedding's frequencies exp(-ln(1e4) i / (half - freq_shift)); diffusers: 1
    norm_eps: float = 1e-6  # the layers' LayerNorm epsilon (the output norm's stays 1e-6); diffusers' DiT: 1e-5

    def to_dict(self) -> dict:
        return asdict(self)


def sincos_2d(num_side: int, dim: int, axes: str = "yx") -> torch.Tensor:
    """Fixed 2-D sine-cosine position embedding, (num_side**2, dim): [sin, cos] of the row (y) coordinate, then of
    the column (x), tokens in row-major order; `axes="xy"` puts the column's half first (DiT's table)."""
    quarter = dim // 4
    freqs = 1.0 / 10000 ** (
        torch.arange(quarter, dtype=torch.float64, device="cpu") / quarter
    )  # a buffer: moves with .to()
    coords = torch.arange(num_side, dtype=torch.float64, device="cpu")
    grid_y, grid_x = torch.meshgrid(coords, coords, indexing="ij")
    parts = []
    coordinates = {"y": grid_y.flatten(), "x": grid_x.flatten()}
    for axis in (coordinates[axes[0]], coordinates[axes[1]]):
        angles = axis[:, None] * freqs[None, :]
        parts += [angles.sin(), angles.cos()]
    emb = torch.cat(parts, dim=1)
    return F.pad(emb, (0, dim - emb.shape[1])).float()


def fourier_features(c_noise: torch.Tensor, dim: int = 256, shift: int = 0) -> torch.Tensor:
    """Sinusoidal features [cos, sin] of the (scalar per example) noise conditioning, (N, dim); `shift`: the
    frequencies' denominator is half - shift (diffusers' `downscale_freq_shift`)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, device=c_noise.device) / (half - shift))
    angles = 1000.0 * c_noise[:, None].float() * freqs[None, :]  # c_noise = ln(sigma)/4 is O(1): spread it
    return torch.cat([angles.cos(), angles.sin()], dim=1)


def per_token(v: torch.Tensor) -> torch.Tensor:
    """A conditioning-derived (N, D) vector as (N, 1, D), to broadcast over tokens; (N, T, D) (one per token) as is."""
    return v[:, None, :] if v.dim() == 2 else v


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + per_token(scale)) + per_token(shift)


class TransformerLayer(nn.Module):
    """Pre-norm attention + MLP, each gated and modulated by adaLN-Zero from the conditioning vector."""

    def __init__(self, hidden_size: int, num_heads: int, mlp_ratio: float, norm_eps: float = 1e-6):
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=norm_eps)
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size)
        self.proj = nn.Linear(hidden_size, hidden_size)
        self.norm2 = nn.LayerNorm(hidden_size, elementwise_affine=False, eps=norm_eps)
        mlp_hidden = int(hidden_size * mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, mlp_hidden), nn.GELU(approximate="tanh"), nn.Linear(mlp_hidden, hidden_size)
        )
        self.ada = nn.Linear(hidden_size, 6 * hidden_size)
        nn.init.zeros_(self.ada.weight)
        nn.init.zeros_(self.ada.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """`cond`: (N, D), or (N, T, D) for one conditioning per token. `attn_bias`: (H, T, T) added to the
        attention logits (text: ALiBi's distance penalty; a boolean mask allows where True), or None."""
        q, k, v, mods = self.attention_inputs(x, cond)
        return self.finish(x, F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias), mods)

    def attention_inputs(self, x: torch.Tensor, cond: torch.Tensor):
        """(q, k, v), each (N, H, T, D/H), and the adaLN modulations the rest of the layer needs: the first half of
        `forward`, apart so a caller may attend over keys and values of its own (a cached prefix)."""
        n, t, d = x.shape  # (N, T, D)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(F.silu(cond)).chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1)
        q, k, v = self.qkv(h).view(n, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        return q, k, v, (gate1, shift2, scale2, gate2)

    def finish(self, x: torch.Tensor, attn: torch.Tensor, mods) -> torch.Tensor:
        """The second half of `forward`: the attention output (N, H, T, D/H) projected and gated in, then the MLP."""
        gate1, shift2, scale2, gate2 = mods
        n, t, d = x.shape
        x = x + per_token(gate1) * self.proj(attn.transpose(1, 2).reshape(n, t, d))
        x = x + per_token(gate2) * self.mlp(modulate(self.norm2(x), shift2, scale2))
        return x


class AdaLNTrunk(nn.Module):
    """What every task's block network shares: adaLN-conditioned transformer layers, then an adaLN-modulated output
    norm and a linear head, both zero-initialised (so a fresh block outputs 0: F = 0 for EDM tasks, uniform logits
    for label and token prediction). Subclasses embed their own inputs and call `build_trunk` where the layers
    belong: registration order fixes parameter order (optimiser state) and the initial random draws."""

    def __init__(self, spec: NetSpec, *, activation_checkpointing: bool = False):
        super().__init__()
        self.spec = spec
        self.activation_checkpointing = activation_checkpointing  # recompute each layer in backward

    def build_trunk(self, spec: NetSpec, out_features: int) -> None:
        d = spec.hidden_size
        self.layers = nn.ModuleList(
            TransformerLayer(d, spec.num_heads, spec.mlp_ratio, spec.norm_eps) for _ in range(spec.num_layers)
        )
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(d, 2 * d)
        self.head = nn.Linear(d, out_features)
        for zeroed in (self.ada_out, self.head):
            nn.init.zeros_(zeroed.weight)
            nn.init.zeros_(zeroed.bias)

    def run_layers(self, x: torch.Tensor, cond: torch.Tensor, attn_bias: torch.Tensor | None = None) -> torch.Tensor:
        """(N, T, D) tokens through every layer, conditioned on (N, D) `cond`."""
        for layer in self.layers:
            if self.activation_checkpointing and torch.is_grad_enabled():
                x = checkpoint(layer, x, cond, attn_bias, use_reentrant=False)
            else:
                x = layer(x, cond, attn_bias)
        return x

    def project_out(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """(N, T, D) -> (N, T, out_features) through the adaLN output norm and the head."""
        shift, scale = self.ada_out(F.silu(cond)).chunk(2, dim=-1)
        return self.head(modulate(self.norm_out(x), shift, scale))


class BlockNet(AdaLNTrunk):
    """F(c_in * z, c_noise, labels) for one block: private embeddings, `num_layers` layers, private head.

    Labels are class indices; index `num_classes` is the null class used for classifier-free guidance.
    With its zero-initialised head a fresh block outputs F = 0, so the denoiser starts as D(z) = c_skip * z.
    """

    def __init__(self, spec: NetSpec, *, activation_checkpointing: bool = False):
        super().__init__(spec, activation_checkpointing=activation_checkpointing)
        d, p = spec.hidden_size, spec.patch_size
        self.num_side = spec.image_size // p
        self.patch_embed = nn.Conv2d(spec.channels, d, kernel_size=p, stride=p)
        self.register_buffer("pos_embed", sincos_2d(self.num_side, d, spec.pos_axes), persistent=False)
        self.noise_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.class_embed = nn.Embedding(spec.num_classes + 1, d)  # unit-scale init: docs/method.md, "What a block is"
        self.build_trunk(spec, p * p * spec.channels)
        if spec.output_conv:  # starts as the identity: the zero head still makes F = 0, and gradients reach the head
            self.output_conv = nn.Conv2d(spec.channels, spec.channels, 3, padding=1)
            nn.init.dirac_(self.output_conv.weight)
            nn.init.zeros_(self.output_conv.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed  # (N, T, D)
        cond = self.noise_embed(fourier_features(c_noise, shift=self.spec.freq_shift)) + self.class_embed(labels)
        out = self.unpatchify(self.project_out(self.run_layers(tokens, cond), cond))  # (N, C, H, W)
        return self.output_conv(out) if self.spec.output_conv else out

    def unpatchify(self, out: torch.Tensor) -> torch.Tensor:
        n, s, p, c = out.shape[0], self.num_side, self.spec.patch_size, self.spec.channels
        out = out.view(n, s, s, p, p, c).permute(0, 5, 1, 3, 2, 4)  # (N, C, s, p, s, p)
        return out.reshape(n, c, s * p, s * p)


def count_params(spec: NetSpec) -> int:
    """Parameters of one block network, without allocating it."""
    with torch.device("meta"):
        return sum(p.numel() for p in BlockNet(spec).parameters())

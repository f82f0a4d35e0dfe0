"""The autoregressive task's block network: a causal transformer over two streams, Block Diffusion style.

Training reads 2T tokens: the clean sequence x_0 .. x_{T-1}, then the noisy one z_0 .. z_{T-1}, where z_i is the
clean target embedding of x_i plus noise. Clean token i attends to clean tokens <= i; noisy token i attends to
clean tokens < i and to itself, never to a clean token at or after i (`two_stream_mask`). So each noisy position
learns D(z_i, x_<i, sigma): token i's embedding, denoised from its noisy version and the clean past. Positions are
ALiBi distance penalties (no absolute position), so keys and values of the clean prefix carry no position and a
generation window can slide. The noise level conditions only the noisy stream (adaLN); the clean stream gets a
learned constant conditioning, so its keys and values do not depend on sigma and one cache of them serves every
denoising step of every later token (`PrefixCache`).

The clean targets are fixed unit vectors, one per token, drawn from one seed: the same in every block of every
run. Blocks hand each other z at inference, so they must agree on the space it lives in, and nothing may cross
blocks in training; a learned embedding would drift apart block by block.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from shared.model import AdaLNTrunk, NetSpec, TransformerLayer, fourier_features

TARGET_SEED = 0


def token_targets(vocab_size: int, width: int) -> torch.Tensor:
    """The clean target embeddings, (V, D): unit vectors from one fixed seed (the same in every block)."""
    generator = torch.Generator(device="cpu").manual_seed(TARGET_SEED)
    return F.normalize(torch.randn(vocab_size, width, generator=generator, device="cpu"), dim=1)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """ALiBi's per-head slopes 2^(-8h/H), (H,)."""
    return torch.tensor([2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)], device="cpu")


def two_stream_mask(length: int) -> torch.Tensor:
    """(2T, 2T) boolean, True where attention is allowed: clean i -> clean j <= i; noisy i -> clean j < i and
    noisy i itself; nothing else (no clean token sees a noisy one, no noisy token another noisy one)."""
    i = torch.arange(length, device="cpu")
    causal = i[None, :] <= i[:, None]
    allowed = torch.zeros(2 * length, 2 * length, dtype=torch.bool, device="cpu")
    allowed[:length, :length] = causal
    allowed[length:, :length] = i[None, :] < i[:, None]
    allowed[length:, length:] = torch.eye(length, dtype=torch.bool, device="cpu")
    return allowed


def two_stream_bias(slopes: torch.Tensor, length: int) -> torch.Tensor:
    """(H, 2T, 2T) attention-logit bias: ALiBi's `-slope * (i - j)` by token position where `two_stream_mask`
    allows, -inf elsewhere."""
    pos = torch.arange(length, device=slopes.device).repeat(2)  # clean i and noisy i are both at position i
    distance = (pos[:, None] - pos[None, :]).float()
    bias = -slopes[:, None, None] * distance[None]
    return bias.masked_fill(~two_stream_mask(length).to(slopes.device)[None], float("-inf"))


def prefix_bias(slopes: torch.Tensor, cached: int) -> torch.Tensor:
    """(H, 1, cached + 1) bias of one new token over `cached` earlier clean tokens (the oldest first) and itself."""
    distance = torch.arange(cached, -1, -1, device=slopes.device).float()
    return -slopes[:, None, None] * distance[None, None, :]


class NextTokenNet(AdaLNTrunk):
    """F for next-token denoising: logits over the vocabulary at every noisy position, from the clean tokens,
    `c_in * z` and `c_noise`. `spec.num_classes` is the vocabulary size, `spec.seq_len` the training context.
    Zero-initialised adaLN gates and head: a fresh block predicts the uniform distribution."""

    def __init__(self, spec: NetSpec, *, prelude_layers: int = 0, activation_checkpointing: bool = False):
        super().__init__(spec, activation_checkpointing=activation_checkpointing)
        d = spec.hidden_size
        self.token_embed = nn.Embedding(spec.num_classes, d)  # the clean stream
        # Layers over the clean stream alone, before the two streams meet (none here; the recurrent-depth task's
        # prelude): `spec.num_layers` counts them too.
        self.prelude = nn.ModuleList(TransformerLayer(d, spec.num_heads, spec.mlp_ratio) for _ in range(prelude_layers))
        self.noisy_in = nn.Linear(d, d)  # c_in * z -> the noisy stream's token
        self.noisy_pos = nn.Parameter(torch.zeros(1, 1, d, device="cpu"))  # marks the noisy stream
        self.clean_cond = nn.Parameter(torch.zeros(d, device="cpu"))  # the clean stream's (sigma-free) conditioning
        self.noise_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.build_trunk(replace(spec, num_layers=spec.num_layers - prelude_layers), spec.num_classes)
        self.register_buffer("targets", token_targets(spec.num_classes, d), persistent=False)
        self.register_buffer("slopes", alibi_slopes(spec.num_heads), persistent=False)

    def forward(self, tokens: torch.Tensor, z_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """(N, T) clean tokens, (N, T, D) scaled noisy embeddings, (N,) c_noise -> (N, T, V) logits of the noisy
        positions (position i: token i, given the clean tokens before it)."""
        n, length = tokens.shape
        if length > self.spec.seq_len:
            raise ValueError(f"sequence of {length} tokens: this model was trained on at most {self.spec.seq_len}")
        d = self.spec.hidden_size
        clean = self.clean_input(tokens)
        noisy = self.noisy_in(z_in) + self.noisy_pos
        noise = self.noise_embed(fourier_features(c_noise))[:, None, :].expand(n, length, d)
        cond = torch.cat([self.clean_cond.expand(n, length, d), noise], dim=1)
        bias = two_stream_bias(self.slopes, length).to(clean.dtype)
        hidden = self.run_layers(torch.cat([clean, noisy], dim=1), cond, bias)
        return self.project_out(hidden[:, length:], cond[:, length:])

    def clean_input(self, tokens: torch.Tensor) -> torch.Tensor:
        """The clean stream as the two-stream layers read it: the tokens' embeddings through the prelude (causal)."""
        x = self.token_embed(tokens)
        if len(self.prelude):
            n, length = tokens.shape
            cond = self.clean_cond.expand(n, length, self.spec.hidden_size)
            causal = two_stream_bias(self.slopes, length)[:, :length, :length].to(x.dtype)
            for layer in self.prelude:
                x = layer(x, cond, causal)
        return x

    def clean_hidden(self, tokens: torch.Tensor) -> torch.Tensor:
        """The clean stream alone, causal: (N, T) -> the last layer's states (N, T, D)."""
        n, length = tokens.shape
        cond = self.clean_cond.expand(n, length, self.spec.hidden_size)
        causal = two_stream_bias(self.slopes, length)[:, :length, :length].to(self.clean_cond.dtype)
        return self.run_layers(self.clean_input(tokens), cond, causal)

    def next_token_logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The clean stream alone as an ordinary causal LM: (N, T) -> (N, T, V), position i predicting token i + 1
        (the backprop baseline and the reference model)."""
        n, length = tokens.shape
        return self.project_out(self.clean_hidden(tokens), self.clean_cond.expand(n, length, self.spec.hidden_size))


class PrefixCache:
    """One block's keys and values of the clean prefix, per layer, (N, H, P, D/H) each; at most `window` tokens
    (the oldest dropped first: the window slides past the training context)."""

    def __init__(self, net: NextTokenNet, batch: int, window: int):
        self.net, self.window = net, window
        heads, width = net.spec.num_heads, net.spec.hidden_size
        empty = net.clean_cond.new_empty((batch, heads, 0, width // heads))  # on the block's device and dtype
        self.layers = [*net.prelude, *net.layers]  # the prelude's (if any), then the two-stream layers'
        self.keys = [empty] * len(self.layers)
        self.values = [empty] * len(self.layers)

    @property
    def length(self) -> int:
        return self.keys[0].shape[2]

    def _attend(self, x: torch.Tensor, cond: torch.Tensor, *, store: bool, first: int = 0, stop=None) -> torch.Tensor:
        """`x` through the cached layers [first, stop), each attending to its cache and to `x` itself."""
        bias = prefix_bias(self.net.slopes, self.length).to(x.dtype)
        stop = len(self.layers) if stop is None else stop
        for index in range(first, stop):
            q, k, v, mods = self.layers[index].attention_inputs(x, cond)
            keys = torch.cat([self.keys[index], k], dim=2)
            values = torch.cat([self.values[index], v], dim=2)
            x = self.layers[index].finish(x, F.scaled_dot_product_attention(q, keys, values, attn_mask=bias), mods)
            if store:
                self.keys[index] = keys[:, :, -self.window :]
                self.values[index] = values[:, :, -self.window :]
        return x

    def append(self, tokens: torch.Tensor) -> torch.Tensor:
        """Add one clean token per row, (N,), to the prefix; returns its last hidden state (N, 1, D)."""
        n, d = len(tokens), self.net.spec.hidden_size
        return self._attend(self.net.token_embed(tokens)[:, None, :], self.net.clean_cond.expand(n, 1, d), store=True)

    def two_stream(self, x: torch.Tensor, cond: torch.Tensor, first: int = 0, stop: int | None = None):
        """A noisy-stream token (N, 1, D) through two-stream layers [first, stop) (default: all), attending to the
        cached clean prefix and itself; nothing is stored."""
        offset = len(self.net.prelude)
        stop = len(self.net.layers) if stop is None else stop
        return self._attend(x, cond, store=False, first=offset + first, stop=offset + stop)

    def next_token_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The ordinary LM's logits (N, V) from a clean token's last hidden state (`append`'s)."""
        cond = self.net.clean_cond.expand(len(hidden), 1, self.net.spec.hidden_size)
        return self.net.project_out(hidden, cond)[:, 0]

    def denoise_logits(self, z_in: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        """Logits (N, V) of the next token from its scaled noisy embedding (N, D) at `c_noise` (N,), attending to
        the cached prefix and itself (nothing is stored)."""
        net = self.net
        x = net.noisy_in(z_in)[:, None, :] + net.noisy_pos
        cond = net.noise_embed(fourier_features(c_noise))[:, None, :]
        return net.project_out(self.two_stream(x, cond), cond)[:, 0]

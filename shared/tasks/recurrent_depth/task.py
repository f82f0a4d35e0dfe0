"""Recurrent depth (Huginn's shape; DiffusionBlocks paper §5.5, App. E.5): a prelude reads the clean tokens once, a
core is applied K times to a latent state, a coda and the head read it. The network is the autoregressive task's
(`NextTokenNet` with a prelude): the core and coda are its two-stream layers, the state is the noisy stream.

Two recipes train the same network (`autoregressive.objective`):

- **denoising** (DiffusionBlocks, one block, no partition): the core and coda together are one denoiser of the next
  token's embedding, `D(z_sigma, prelude(x), sigma)`, trained exactly as the autoregressive task's end-to-end
  denoiser: sigma from the whole log-normal, **one core pass per example**, no graph through iterations. At
  inference each of the K iterations is an Euler step of the core (and coda: the denoised estimate is read through
  the head, as the autoregressive task's is; docs/tasks.md says why) from `sigma_max * randn`; the prelude runs once
  per token, outside the loop.
- **backprop** (Huginn's): a random iteration count r in 1..`max_iterations` per step, the state from noise, the
  core iterated r times, gradients through the last `backprop_iterations` only (truncated backpropagation), then the
  coda and the head read the last state: cross-entropy of the next token. At inference the core iterates K times
  from noise, then the coda reads the state once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.model import NetSpec, fourier_features
from shared.tasks.autoregressive.net import NextTokenNet, PrefixCache, two_stream_bias
from shared.tasks.autoregressive.task import Autoregressive, NextTokenDenoiser
from shared.tasks.recurrent_depth.config import RecurrentDepthConfig


class RecurrentDenoiser(NextTokenDenoiser):
    """The autoregressive denoiser of a recurrent-depth network; with `iterated` (the backprop recipe) it also
    iterates the core's state, Huginn's way (`iterate`, `iterate_logits`)."""

    def __init__(self, net: NextTokenNet, sigma_data: float, *, coda_layers: int, iterated: bool):
        super().__init__(net, sigma_data)
        self.coda_layers, self.iterated = coda_layers, iterated

    @property
    def mode(self) -> str:
        return "iterate" if self.iterated else "denoise"

    @property
    def core_layers(self) -> int:
        return len(self.net.layers) - self.coda_layers

    def state_cond(self, n: int) -> torch.Tensor:
        """The conditioning of the iterated state (no noise level: the embedding of c_noise 0), (N, D)."""
        return self.net.noise_embed(fourier_features(self.net.clean_cond.new_zeros(n)))

    def iterate(self, tokens: torch.Tensor, iterations: int, backprop: int, generator: torch.Generator):
        """Logits (N, T, V) after `iterations` core iterations from a random state, gradients only through the
        last `backprop` of them (the earlier ones run without a graph)."""
        net, (n, length), d = self.net, tokens.shape, self.net.spec.hidden_size
        clean = net.clean_input(tokens)
        cond = torch.cat([net.clean_cond.expand(n, length, d), self.state_cond(n)[:, None].expand(n, length, d)], 1)
        bias = two_stream_bias(net.slopes, length).to(clean.dtype)
        state = torch.randn((n, length, d), generator=generator, device=generator.device).to(clean)
        x = None
        for step in range(iterations):
            with torch.set_grad_enabled(torch.is_grad_enabled() and step >= iterations - backprop):
                x = torch.cat([clean, net.noisy_in(state) + net.noisy_pos], dim=1)
                for layer in net.layers[: self.core_layers]:
                    x = layer(x, cond, bias)
                state = x[:, length:]
        for layer in net.layers[self.core_layers :]:  # the coda reads the last state (and the clean stream)
            x = layer(x, cond, bias)
        return net.project_out(x[:, length:], cond[:, length:])

    def iterate_logits(self, cache: PrefixCache, n: int, iterations: int, generator, on_step=None) -> torch.Tensor:
        """The next token's logits (N, V) after `iterations` core iterations of its state from noise, each attending
        to the cached clean prefix, then the coda once."""
        net, d = self.net, self.net.spec.hidden_size
        cond = self.state_cond(n)[:, None, :]
        state = torch.randn((n, 1, d), generator=generator, device="cpu").to(net.clean_cond)
        x = state
        for _ in range(iterations):
            x = cache.two_stream(net.noisy_in(state) + net.noisy_pos, cond, 0, self.core_layers)
            state = x
            if on_step is not None:
                on_step(0)
        x = cache.two_stream(x, cond, self.core_layers, len(net.layers))
        return net.project_out(x, cond)[:, 0]


class RecurrentDepth(Autoregressive):
    name = "recurrent_depth"
    section_model = RecurrentDepthConfig  # the autoregressive section and the recurrence (its name: autoregressive)

    def __init__(self, *, prelude_layers: int = 2, coda_layers: int = 2, max_iterations: int = 32,
                 backprop_iterations: int = 8, **lm):  # fmt: skip
        super().__init__(**lm)
        self.prelude_layers, self.coda_layers = prelude_layers, coda_layers
        self.max_iterations, self.backprop_iterations = max_iterations, backprop_iterations

    @classmethod
    def options_from(cls, config) -> dict:
        section = config.autoregressive
        return {
            **super().options_from(config),
            "prelude_layers": section.prelude_layers,
            "coda_layers": section.coda_layers,
            "max_iterations": section.max_iterations,
            "backprop_iterations": section.backprop_iterations,
        }

    @property
    def options(self) -> dict:
        recurrence = {"prelude_layers": self.prelude_layers, "coda_layers": self.coda_layers}
        recurrence |= {"max_iterations": self.max_iterations, "backprop_iterations": self.backprop_iterations}
        return {**super().options, **recurrence}

    @classmethod
    def check_config(cls, config) -> None:
        section = config.autoregressive
        if config.planned_blocks != 1:
            raise ValueError(
                f"blocks.num_blocks {config.blocks.num_blocks}: recurrent depth trains one block (no partition: the "
                "core is one denoiser of the whole noise range); set blocks.num_blocks 1"
            )
        core = config.model.num_layers - section.prelude_layers - section.coda_layers
        if core < 1:
            raise ValueError(
                f"model.num_layers {config.model.num_layers}: the prelude ({section.prelude_layers}) and the coda "
                f"({section.coda_layers}) leave no core layer"
            )

    def plan_header(self, boundaries: list[float]) -> dict:
        core = {"prelude_layers": self.prelude_layers, "coda_layers": self.coda_layers}
        return {**super().plan_header(boundaries), "recipe": self.objective, **core}

    def tokens_per_example(self, spec: NetSpec) -> int:
        return 2 * spec.seq_len  # both recipes run the clean stream and the noisy (state) stream together

    def network(self, spec: NetSpec, *, activation_checkpointing: bool = False) -> nn.Module:
        return NextTokenNet(spec, prelude_layers=self.prelude_layers, activation_checkpointing=activation_checkpointing)

    def denoiser(self, net: nn.Module, sigma_data: float) -> nn.Module:
        return RecurrentDenoiser(net, sigma_data, coda_layers=self.coda_layers, iterated=self.objective == "backprop")

    def loss(self, model, images, labels, sigma, *, sigma_data: float, generator, label_dropout: float):
        """denoising: the autoregressive task's loss (one core pass); backprop: Huginn's, at a random iteration
        count drawn from `generator`."""
        if self.objective != "backprop":
            return super().loss(model, images, labels, sigma, sigma_data=sigma_data, generator=generator,
                                label_dropout=label_dropout)  # fmt: skip
        logits = self.iterated_logits(model, images, generator)
        return F.cross_entropy(logits.transpose(1, 2).float(), images)

    def iterated_logits(self, model, tokens: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        iterations = int(torch.randint(1, self.max_iterations + 1, (1,), generator=generator, device=generator.device))
        return getattr(model, "module", model).iterate(tokens, iterations, self.backprop_iterations, generator)

    def progress(self, model, images, labels, sigma, generator: torch.Generator) -> float:
        if self.objective != "backprop":
            return super().progress(model, images, labels, sigma, generator)
        return float((self.iterated_logits(model, images, generator).argmax(dim=-1) == images).float().mean())

    def preview(self, denoiser, images, labels, sigma_lo, sigma_hi, generator) -> str | None:
        return None if self.objective == "backprop" else super().preview(denoiser, images, labels, sigma_lo, sigma_hi,
                                                                          generator)  # fmt: skip

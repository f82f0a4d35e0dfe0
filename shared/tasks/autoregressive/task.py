"""Autoregressive language modelling trained block-wise (DiffusionBlocks' LM experiments, paper App. B and E.4):
each block denoises the *next token's embedding* over its slice of the noise range, given the clean past.

Tokens (`tokens.py`: bytes or a BPE trained on the run's training split) have fixed unit-vector target embeddings
y = e(x_i); z_i = y + sigma * eps on the EDM sigma axis, its log-normal and its equi-probability partition as for
images (B = 4, gamma 0.1 in the example, the paper's LM defaults). A block (`net.py`) reads the clean sequence and
the noisy one together (Block Diffusion's 2T input, the causal-consistency mask) and outputs logits at every noisy
position; the loss is `w(sigma) * CE(logits_i, x_i)` on the noisy positions only, and the denoised estimate is
`softmax(logits) @ targets`, as in label denoising. One sigma per sequence (every position of a training sequence
shares it): a generated token is denoised at one sigma at a time too, and the worker draws one level per example.

`objective: backprop` trains the same backbone as an ordinary next-token LM (the clean stream alone, cross-entropy
of token i + 1 at position i): the paper's AR baseline, end to end. Generation and evaluation: `generate.py`,
`evaluate.py`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.data.corpus import TokenBatches, sequences
from shared.model import NetSpec
from shared.noise import edm_scalings, loss_weight
from shared.tasks.autoregressive.config import AutoregressiveConfig
from shared.tasks.autoregressive.net import NextTokenNet
from shared.tasks.autoregressive.tokens import Tokens, load_token_corpus, resolve_tokens
from shared.tasks.base import PROMPTS, SAMPLES_TXT
from shared.tasks.edm import SigmaAxis

OBJECTIVES = ("denoising", "backprop")


class NextTokenDenoiser(nn.Module):
    """EDM preconditioning of the next token's embedding: `forward(z, sigma, tokens)` -> logits (N, T, V) with z
    (N, T, D) and sigma (N,); `noise_free`: the backprop baseline, an ordinary next-token LM that ignores z and
    sigma (its logits at i predict token i + 1)."""

    def __init__(self, net: NextTokenNet, sigma_data: float, *, noise_free: bool = False):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data
        self.noise_free = noise_free

    @property
    def mode(self) -> str:
        """How generation gets a token's logits from this block: "lm" (read from the clean stream), "denoise"
        (Euler steps from noise through the blocks), or "iterate" (a recurrent-depth core, Huginn's way)."""
        return "lm" if self.noise_free else "denoise"

    def scalings(self, sigma: torch.Tensor):
        """(c_in, c_noise) of per-row noise levels (N,): c_in (N, 1), c_noise (N,)."""
        _, _, c_in, c_noise = edm_scalings(sigma.reshape(-1, 1), self.sigma_data)
        return c_in, c_noise.flatten()

    def forward(self, z: torch.Tensor, sigma: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if self.noise_free:
            return self.net.next_token_logits(tokens)
        c_in, c_noise = self.scalings(sigma.to(z.dtype))
        return self.net(tokens, c_in[:, :, None] * z, c_noise)

    def denoise(self, logits: torch.Tensor) -> torch.Tensor:
        """The denoised embedding: the token-probability-weighted mean of the targets."""
        return logits.float().softmax(dim=-1) @ self.net.targets


class Autoregressive(SigmaAxis):
    name = "autoregressive"
    progress_metric = "accuracy"  # next-token accuracy of the block's logits on its training batch, at its sigmas
    section = "autoregressive"
    section_model = AutoregressiveConfig
    outputs = frozenset({SAMPLES_TXT, PROMPTS})

    def __init__(
        self,
        tokenizer: str = "bytes",
        tokenizer_json: str | None = None,
        seq_len: int = 0,
        objective: str = "denoising",
    ):
        if objective not in OBJECTIVES:
            raise ValueError(f"autoregressive objective must be one of {OBJECTIVES}, got {objective!r}")
        self.tokenizer, self.tokenizer_json = tokenizer, tokenizer_json
        self.seq_len, self.objective = seq_len, objective

    @classmethod
    def options_from(cls, config) -> dict:
        section = config.autoregressive
        return {
            "tokenizer": section.tokenizer,
            "tokenizer_json": section.tokenizer_json,
            "seq_len": section.seq_len,
            "objective": section.objective,
        }

    @property
    def options(self) -> dict:
        return {
            "tokenizer": self.tokenizer,
            "tokenizer_json": self.tokenizer_json,
            "seq_len": self.seq_len,
            "objective": self.objective,
        }

    def tokens(self) -> Tokens:
        return Tokens(self.tokenizer, self.tokenizer_json)

    @classmethod
    def check_config(cls, config) -> None:
        if config.autoregressive.objective == "backprop" and config.train.mode != "end_to_end":
            raise ValueError(
                "autoregressive.objective backprop trains one ordinary next-token LM end to end: it needs "
                f"train.mode end_to_end (got {config.train.mode})"
            )

    @classmethod
    def sources(cls, config) -> list[tuple[str, str]]:
        source = config.autoregressive.source
        return [("autoregressive.source", source)] if source is not None else []

    @classmethod
    def resolve_data(cls, config, *, confined: bool):
        return resolve_tokens(config, confined=confined)

    @classmethod
    def data_label(cls, config) -> str:
        return config.autoregressive.source or config.autoregressive.corpus

    def plan_header(self, boundaries: list[float]) -> dict:
        return {"task": self.name, "axis": self.axis}

    def net_spec(self, config, num_layers: int) -> NetSpec:
        model = config.model
        return NetSpec(
            num_classes=self.tokens().vocab_size,
            hidden_size=model.hidden_size,
            num_heads=model.num_heads,
            mlp_ratio=model.mlp_ratio,
            num_layers=num_layers,
            seq_len=self.seq_len,
        )

    def tokens_per_example(self, spec: NetSpec) -> int:
        return spec.seq_len * (2 if self.objective == "denoising" else 1)  # the clean stream and the noisy one

    def train_batches(self, config, *, seed: int, rank: int = 0, world_size: int = 1):
        section = config.autoregressive
        return TokenBatches(load_token_corpus(section).split("train"), section.seq_len)

    def preview_batch(self, config, count: int) -> tuple[torch.Tensor, None]:
        section = config.autoregressive
        return sequences(load_token_corpus(section).split("validation"), section.seq_len)[:count], None

    def network(self, spec: NetSpec, *, activation_checkpointing: bool = False) -> nn.Module:
        return NextTokenNet(spec, activation_checkpointing=activation_checkpointing)

    def denoiser(self, net: nn.Module, sigma_data: float) -> nn.Module:
        return NextTokenDenoiser(net, sigma_data, noise_free=self.objective == "backprop")

    def loss(self, model, images, labels, sigma, *, sigma_data: float, generator, label_dropout: float):
        """`images` are the clean tokens (N, T), `sigma` one noise level per sequence (N,)."""
        if self.objective == "backprop":
            logits = model(None, sigma, images)
            return F.cross_entropy(logits[:, :-1].transpose(1, 2).float(), images[:, 1:])
        logits = model(noisy_targets(model, images, sigma, generator), sigma, images)
        nats = F.cross_entropy(logits.transpose(1, 2).float(), images, reduction="none")  # (N, T), noisy positions
        return (loss_weight(sigma, sigma_data)[:, None] * nats).mean()

    def progress(self, model, images, labels, sigma, generator: torch.Generator) -> float:
        if self.objective == "backprop":
            return float((model(None, sigma, images)[:, :-1].argmax(dim=-1) == images[:, 1:]).float().mean())
        logits = model(noisy_targets(model, images, sigma, generator), sigma, images)
        return float((logits.argmax(dim=-1) == images).float().mean())

    def preview(self, denoiser, images, labels, sigma_lo, sigma_hi, generator) -> str:
        """Held-out text and, under it, this block's guess of every token (its noisy embedding at the block's
        geometric-middle sigma, the clean past given), with its accuracy."""
        sigma = torch.full((len(images),), (sigma_lo * sigma_hi) ** 0.5, device=images.device)
        with torch.no_grad():
            logits = denoiser(noisy_targets(denoiser, images, sigma, generator), sigma, images)
        guess = logits.argmax(dim=-1)
        if self.objective == "backprop":  # position i predicts token i + 1
            guess, images = guess[:, :-1], images[:, 1:]
        tokens = self.tokens()
        accuracy = float((guess == images).float().mean())
        lines = [f"sigma = {float(sigma[0]):.3f} (block interval [{sigma_lo:.3f}, {sigma_hi:.3f}]): {accuracy:.3f}"]
        for row, row_guess in zip(images.tolist(), guess.tolist()):
            lines += ["text:    " + escape(tokens.decode(row)), "guessed: " + escape(tokens.decode(row_guess)), ""]
        return "\n".join(lines)


def noisy_targets(model, tokens: torch.Tensor, sigma: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """z = e(x) + sigma * eps, (N, T, D): the tokens' target embeddings noised at each sequence's sigma."""
    targets = getattr(model, "module", model).net.targets  # through a DDP wrapper too
    eps = torch.randn((*tokens.shape, targets.shape[1]), generator=generator, device=generator.device)
    return targets[tokens] + sigma.reshape(-1, 1, 1).to(targets.dtype) * eps.to(targets.device)


def escape(text: str) -> str:
    """One line per sample: backslashes and newlines escaped (`\\\\`, `\\n`), carriage returns too."""
    return text.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")

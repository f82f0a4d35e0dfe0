"""Masked-diffusion language modelling (MD4; DiffusionBlocks' text experiments) over a character vocabulary.

Noise is masking: at time t in [0, 1] each symbol is kept with probability alpha(t) = 1 - t and replaced by [MASK]
(id = vocabulary size) otherwise. The time axis is partitioned at equal training mass, which for the linear
schedule is `t_b = b / B`; block 0 owns the most-masked slice (t near 1), as block 0 owns the highest sigma for
images, and gamma widens each slice linearly in t. Each block's loss is the MD4 ELBO restricted to its slice: t
drawn uniformly in the (widened) slice, weight `-alpha'(t) / (1 - alpha(t)) = 1 / t` times the cross-entropy over
the masked positions, per symbol. The block is a bidirectional transformer over the symbols with adaLN time
conditioning (the DiT layer of `shared.model`), with its own symbol embedding and head (nothing crosses blocks).

Sampling starts all-[MASK] at t = 1 and steps t down; at each step the block owning t predicts the masked symbols
and each still-masked one is revealed with probability `(alpha(s) - alpha(t)) / (1 - alpha(t)) = (t - s) / t`, so
by s = 0 every symbol is revealed. Bits per character: the ELBO (integral over t of the weighted masked
cross-entropy, per symbol, over ln 2), estimated by Monte Carlo over t and masks with each t routed to its block.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from shared.model import AdaLNTrunk, NetSpec, fourier_features
from shared.partition import widen_linear
from shared.tasks.base import SAMPLES_TXT
from shared.tasks.text.config import TextConfig
from shared.tasks.text.data import TEXT8, TokenBatches, load_corpus, resolve_text, sequences

T_MIN = 1e-3  # training and evaluation times are clamped here: the weight 1/t is bounded (the ELBO loses < 0.1 %)


def sincos_1d(length: int, dim: int) -> torch.Tensor:
    """Fixed sine-cosine position embedding, (length, dim)."""
    half = dim // 2
    freqs = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64, device="cpu") / half)
    angles = torch.arange(length, dtype=torch.float64, device="cpu")[:, None] * freqs[None, :]
    return torch.cat([angles.sin(), angles.cos()], dim=1).float()


def alibi_bias(num_heads: int, length: int) -> torch.Tensor:
    """(H, L, L) attention-logit bias `-slope_h * |i - j|` (ALiBi, bidirectional): each head prefers nearby
    symbols at its own rate (slopes 2^(-8h/H)), a locality the model need not first learn from absolute positions."""
    slopes = torch.tensor([2.0 ** (-8.0 * (h + 1) / num_heads) for h in range(num_heads)], device="cpu")
    distance = (torch.arange(length, device="cpu")[:, None] - torch.arange(length, device="cpu")[None, :]).abs()
    return -slopes[:, None, None] * distance[None].float()


class MaskedTokenNet(AdaLNTrunk):
    """Logits over the vocabulary at every position from (symbols with [MASK]s, t). `spec.num_classes` is the
    vocabulary size V (the mask id is V) and `spec.seq_len` the sequence length. Zero-initialised adaLN gates and
    head: a fresh block predicts the uniform distribution."""

    def __init__(self, spec: NetSpec, *, activation_checkpointing: bool = False):
        super().__init__(spec, activation_checkpointing=activation_checkpointing)
        d = spec.hidden_size
        self.token_embed = nn.Embedding(spec.num_classes + 1, d)  # + [MASK]
        self.register_buffer("pos_embed", sincos_1d(spec.seq_len, d), persistent=False)
        self.register_buffer("attn_bias", alibi_bias(spec.num_heads, spec.seq_len), persistent=False)
        self.time_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.build_trunk(spec, spec.num_classes)

    def forward(self, tokens: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        if length > self.spec.seq_len:
            raise ValueError(f"sequence of {length} symbols: this model was trained on at most {self.spec.seq_len}")
        x = self.token_embed(tokens) + self.pos_embed[:length]  # (N, L, D)
        cond = self.time_embed(fourier_features(t))  # (N, D)
        bias = self.attn_bias[:, :length, :length].to(x.dtype)
        return self.project_out(self.run_layers(x, cond, bias), cond)  # (N, L, V)


class MaskedDenoiser(nn.Module):
    """The denoiser signature the assembly routes by noise level: `forward(z, t, labels=None)` -> logits."""

    def __init__(self, net: MaskedTokenNet):
        super().__init__()
        self.net = net

    @property
    def mask_id(self) -> int:
        return self.net.spec.num_classes

    def forward(self, z: torch.Tensor, t: torch.Tensor, labels=None) -> torch.Tensor:
        return self.net(z, t.reshape(-1).to(torch.float32))


def mask_tokens(tokens: torch.Tensor, t: torch.Tensor, mask_id: int, generator: torch.Generator):
    """(z, masked): each symbol replaced by [MASK] with probability t (its example's), i.e. kept with alpha = 1 - t."""
    u = torch.rand(tokens.shape, generator=generator, device=generator.device).to(tokens.device)
    masked = u < t[:, None]
    return torch.where(masked, torch.full_like(tokens, mask_id), tokens), masked


def elbo_weight(t: torch.Tensor) -> torch.Tensor:
    """-alpha'(t) / (1 - alpha(t)) for the linear schedule alpha(t) = 1 - t: 1 / t."""
    return 1.0 / t


def symbol_nats(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """(N, L) cross-entropy of each symbol (nats), in float32 whatever the logits' dtype."""
    return F.cross_entropy(logits.transpose(1, 2).float(), tokens, reduction="none")


def masked_nats(logits: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Per sequence: the weighted masked cross-entropy per symbol (nats), (N,). Its mean over t ~ U(0, 1) and masks
    is the MD4 ELBO (an upper bound on the negative log-likelihood per symbol)."""
    return elbo_weight(t) * (symbol_nats(logits, tokens) * masked).sum(dim=1) / tokens.shape[1]


def masked_mean_nats(logits: torch.Tensor, tokens: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """Per sequence: the cross-entropy averaged over its masked symbols (nats), (N,); 0 where nothing is masked.
    At each t its expectation is the ELBO integrand's up to the spread of the mask count around t * L, without the
    1/t weight that makes `masked_nats` a high-variance training signal at small t on short sequences."""
    return (symbol_nats(logits, tokens) * masked).sum(dim=1) / masked.sum(dim=1).clamp(min=1)


def mean_over_masked_sequences(per_sequence: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
    """The batch mean of `masked_mean_nats` over the sequences with at least one masked symbol: a sequence with none
    has no loss to give, and counting it as a zero would weight each t by its chance of a mask, 1 - (1 - t)^L (0.47
    at t = 0.01, L = 64), where the ELBO weights every t alike."""
    has_mask = masked.any(dim=1)
    return (per_sequence * has_mask).sum() / has_mask.sum().clamp(min=1)


def stratified_times(num: int, lo: float, hi: float, generator: torch.Generator) -> torch.Tensor:
    """`num` times in [lo, hi], one per equal stratum, in random order (MD4's low-variance draw of t), >= T_MIN."""
    device = generator.device
    u = (torch.rand(1, generator=generator, device=device) + torch.arange(num, device=device) / num) % 1.0
    u = u[torch.randperm(num, generator=generator, device=device)]
    return (lo + (hi - lo) * u).clamp(min=T_MIN)


class MaskedDiffusionText:
    name = "text"
    axis = "t"  # masking time: higher is noisier (more masked); block 0 owns the highest
    noise_axes = frozenset({"edm"})  # the noise section is unused: masking has its own axis
    init_formats = frozenset({"run"})  # it may start from an end-to-end run of its own
    progress_metric = None  # the loss itself is in nats per symbol (bits: divide by ln 2)
    section = "text"
    section_model = TextConfig
    outputs = frozenset({SAMPLES_TXT})

    def __init__(self, vocabulary: str = "", seq_len: int = 0, train_weighting: str = "elbo"):
        self.vocabulary = vocabulary  # the symbols in id order; the mask id is len(vocabulary)
        self.seq_len = seq_len
        self.train_weighting = train_weighting  # training only: not among `options` (nothing rebuilt needs it)

    @classmethod
    def options_from(cls, config) -> dict:
        text = config.text
        return {"vocabulary": text_vocabulary(config), "seq_len": text.seq_len, "train_weighting": text.train_weighting}

    @property
    def options(self) -> dict:
        return {"vocabulary": self.vocabulary, "seq_len": self.seq_len}

    @classmethod
    def check_config(cls, config) -> None:
        pass

    @classmethod
    def sources(cls, config) -> list[tuple[str, str]]:
        return [("text.source", config.text.source)] if config.text.source is not None else []

    @classmethod
    def resolve_data(cls, config, *, confined: bool):
        return resolve_text(config, confined=confined)

    @classmethod
    def data_label(cls, config) -> str:
        return config.text.source or config.text.corpus

    def plan_header(self, boundaries: list[float]) -> dict:
        return {"task": self.name, "axis": self.axis}

    def net_spec(self, config, num_layers: int) -> NetSpec:
        model = config.model
        return NetSpec(
            num_classes=len(self.vocabulary),
            hidden_size=model.hidden_size,
            num_heads=model.num_heads,
            mlp_ratio=model.mlp_ratio,
            num_layers=num_layers,
            seq_len=self.seq_len,
        )

    def tokens_per_example(self, spec: NetSpec) -> int:
        return spec.seq_len

    def boundaries(self, config) -> list[float]:
        """B + 1 ascending times at equal training mass: alpha(t_a) - alpha(t_b) equal, i.e. t_b = b / B."""
        n = config.planned_blocks
        return [b / n for b in range(n + 1)]

    def widen(self, lo: float, hi: float, gamma: float, lo_min: float, hi_max: float) -> tuple[float, float]:
        return widen_linear(lo, hi, gamma, lo_min, hi_max)

    def sample_noise(self, num: int, lo: float, hi: float, config, generator: torch.Generator) -> torch.Tensor:
        return stratified_times(num, lo, hi, generator)

    def train_batches(self, config, *, seed: int, rank: int = 0, world_size: int = 1):
        corpus = load_corpus(config.text)
        return TokenBatches(corpus.split("train"), config.text.seq_len)

    def preview_batch(self, config, count: int) -> tuple[torch.Tensor, None]:
        return sequences(load_corpus(config.text).split("validation"), config.text.seq_len)[:count], None

    def network(self, spec: NetSpec, *, activation_checkpointing: bool = False) -> nn.Module:
        return MaskedTokenNet(spec, activation_checkpointing=activation_checkpointing)

    def denoiser(self, net: nn.Module, sigma_data: float) -> nn.Module:
        return MaskedDenoiser(net)

    def loss(self, model, images, labels, sigma, *, sigma_data: float, generator, label_dropout: float):
        """`images` are the clean symbols (N, L), `sigma` the times t (N,)."""
        mask_id = getattr(model, "module", model).mask_id
        z, masked = mask_tokens(images, sigma, mask_id, generator)
        if self.train_weighting == "masked_mean":
            return mean_over_masked_sequences(masked_mean_nats(model(z, sigma), images, masked), masked)
        return masked_nats(model(z, sigma), images, masked, sigma).mean()

    def preview(self, denoiser, images, labels, sigma_lo, sigma_hi, generator) -> str:
        """Held-out text masked at the middle of the block's own slice, and this block's reconstruction (the most
        likely symbol at every masked position)."""
        t = torch.full((len(images),), (sigma_lo + sigma_hi) / 2, device=images.device).clamp(min=T_MIN)
        with torch.no_grad():
            z, masked = mask_tokens(images, t, denoiser.mask_id, generator)
            guess = torch.where(masked, denoiser(z, t).argmax(dim=-1), images)
        lines = [f"t = {float(t[0]):.3f} (block interval [{sigma_lo:.3f}, {sigma_hi:.3f}])"]
        for row_z, row_guess in zip(z.tolist(), guess.tolist()):
            lines += ["masked:  " + self.render(row_z), "guessed: " + self.render(row_guess), ""]
        return "\n".join(lines)

    def render(self, ids) -> str:
        return "".join(self.vocabulary[i] if i < len(self.vocabulary) else "_" for i in ids)


def text_vocabulary(config) -> str:
    """The run's symbols: fixed for text8; for `chars`, `text.symbols` (filled in when the run is resolved)."""
    if config.text.vocabulary == "text8":
        return TEXT8
    if not config.text.symbols:
        raise ValueError("text.vocabulary chars: text.symbols is not resolved yet (text.data.resolve_text)")
    return config.text.symbols


@torch.no_grad()
def sample_text(
    assembled, *, num: int, length: int, steps: int, seed: int, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """(num, length) symbol ids generated from all-[MASK] at t = 1 by `steps` equal steps down to t = 0; at each
    step the block owning t predicts, and each still-masked symbol is revealed with probability (t - s) / t."""
    mask_id = assembled.blocks[0].mask_id
    generator = torch.Generator(device="cpu").manual_seed(seed)
    z = torch.full((num, length), mask_id, dtype=torch.long, device=device)
    times = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64, device="cpu").tolist()
    for t, s in zip(times[:-1], times[1:]):
        logits = assembled(z, torch.full((num,), t, device=device), None).float()
        probs = logits.softmax(dim=-1).cpu()
        drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(num, length)
        reveal = torch.rand((num, length), generator=generator, device="cpu") < (t - s) / t
        still = (z == mask_id).cpu()
        z = torch.where((still & reveal).to(z.device), drawn.to(z.device), z)
    return z


@torch.no_grad()
def estimate_bpc(
    assembled,
    sequences: torch.Tensor,
    *,
    seed: int,
    target_stderr: float,
    min_samples: int,
    max_samples: int,
    batch_size: int = 256,
    prefix: bool = False,
) -> dict:
    """Monte-Carlo ELBO in bits per character on held-out sequences: passes over the whole test text, each sequence
    with its own t ~ U(0, 1) (stratified per batch) and mask, each t routed to the block that owns it; at least one
    whole pass (and `min_samples`), then on until the standard error is at most `target_stderr`; at most
    `max_samples`. The sequences are visited in a seeded permutation, so a pass cut short by `max_samples` is a
    random part of the test text, not its beginning; `coverage` says how much of it was read.

    `prefix=True` is the estimate before issue 40, kept to measure the change: the sequences in their order from
    the first, stopping at `min_samples` once the standard error is small enough, so a prefix of the test text."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    mask_id = assembled.blocks[0].mask_id
    if prefix:
        order = torch.arange(len(sequences), device="cpu")
    else:
        order = torch.randperm(len(sequences), generator=generator, device="cpu")
        min_samples = max(min_samples, len(sequences))
    values: list[torch.Tensor] = []
    count, start = 0, 0
    while count < max_samples:
        rows = order[torch.arange(start, min(start + batch_size, max_samples), device="cpu") % len(sequences)]
        start += batch_size
        tokens = sequences[rows]
        t = stratified_times(len(tokens), 0.0, 1.0, generator)
        z, masked = mask_tokens(tokens, t, mask_id, generator)
        bits = masked_nats(assembled(z, t, None), tokens, masked, t) / math.log(2)
        values.append(bits)
        count += len(bits)
        if count >= min_samples:
            all_bits = torch.cat(values).double()
            stderr = float(all_bits.std() / math.sqrt(len(all_bits)))
            if stderr <= target_stderr:
                break
    all_bits = torch.cat(values).double()
    return {
        "bpc": float(all_bits.mean()),
        "bpc_stderr": float(all_bits.std() / math.sqrt(len(all_bits))),
        "num_samples": len(all_bits),
        "coverage": min(len(all_bits), len(sequences)) / len(sequences),  # share of the test sequences read
        "passes": len(all_bits) / len(sequences),
    }


@torch.no_grad()
def bits_by_time(
    denoiser, sequences: torch.Tensor, times: list[float], *, seed: int, mask_id: int, draws: int = 1
) -> list[float]:
    """The ELBO's integrand on held-out sequences: at each t, the mean weighted masked cross-entropy in bits per
    symbol over `draws` masks per sequence. `denoiser(z, t)` gives the logits: an assembled model (each t through
    the block that owns it), or one block scored on its own slice. The integral over t in [0, 1] is the BPC bound,
    so the curve shows what each block's slice contributes."""
    generator = torch.Generator(device="cpu").manual_seed(seed)
    curve = []
    for t in times:
        tt = torch.full((len(sequences),), max(t, T_MIN), device=sequences.device)
        nats = 0.0
        for _ in range(draws):
            z, masked = mask_tokens(sequences, tt, mask_id, generator)
            nats += float(masked_nats(denoiser(z, tt), sequences, masked, tt).mean())
        curve.append(nats / draws / math.log(2))
    return curve


def unigram_bpc(ids: torch.Tensor, vocabulary_size: int) -> float:
    """Entropy in bits of the symbol frequencies of `ids`: what a model that ignores context scores."""
    counts = torch.bincount(ids.reshape(-1), minlength=vocabulary_size).double()
    p = counts[counts > 0] / counts.sum()
    return float(-(p * p.log2()).sum())

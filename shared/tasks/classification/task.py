"""Classification by label denoising (DiffusionBlocks' classification experiments; the official code's only task).

Target: `y = normalize(E[label])`, a row of the block's learned class-embedding matrix E, L2-normalised (without
the normalisation the embeddings collapse). Noising as for images, in embedding space: `z = y + sigma * eps`.
The block is a ViT over the image's patch tokens plus one label token carrying `c_in * z`, conditioned on
`c_noise` by adaLN; an output adaLN and a linear head on the label token give class logits. Loss:
`mean(w(sigma) * CE(logits, label))`, w the EDM weight. Inference: `z = sigma_max * randn`, and at each step the
denoised estimate is `softmax(logits) @ normalize(E)` (normalised E: the official code uses the raw E here, a scale
mismatch), then an Euler step; the last call's logits give the prediction. B steps on the equi-probability
schedule call each block once, so inference costs one forward pass of the whole network.

Every block owns its E (private, like the image blocks' embeddings), initialised from one fixed seed, so all blocks
start in the same embedding space and exchange nothing while they train.

The backprop baseline (`classification.objective: backprop`, end-to-end only) is the same network as an ordinary
classifier: the label token carries zeros and the noise conditioning is constant (a learned CLS token, fixed adaLN),
the loss is plain cross-entropy, and inference is its one call.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.model import AdaLNTrunk, NetSpec, fourier_features, sincos_2d
from shared.noise import edm_scalings, loss_weight
from shared.sampling import euler_step
from shared.tasks.base import PREDICT
from shared.tasks.classification.config import ClassificationConfig
from shared.tasks.edm import EDMTask

EMBEDDING_SEED = 0  # the same initial class embedding in every block of every run


def initial_class_embedding(num_classes: int, width: int) -> torch.Tensor:
    """E at initialisation, (K, D): the same in every block of every run (one fixed seed)."""
    generator = torch.Generator(device="cpu").manual_seed(EMBEDDING_SEED)
    return torch.randn(num_classes, width, generator=generator, device="cpu")


class LabelDenoiserNet(AdaLNTrunk):
    """F for label denoising: logits from (images, c_in * z, c_noise). Zero-initialised adaLN gates and head, so a
    fresh block predicts uniform class probabilities."""

    def __init__(self, spec: NetSpec, *, activation_checkpointing: bool = False):
        super().__init__(spec, activation_checkpointing=activation_checkpointing)
        d, p = spec.hidden_size, spec.patch_size
        self.num_side = spec.image_size // p
        self.patch_embed = nn.Conv2d(spec.channels, d, kernel_size=p, stride=p)
        self.register_buffer("pos_embed", sincos_2d(self.num_side, d), persistent=False)
        self.label_in = nn.Linear(d, d)  # the noisy label embedding -> the label token
        self.label_pos = nn.Parameter(torch.zeros(1, 1, d, device="cpu"))
        self.noise_embed = nn.Sequential(nn.Linear(256, d), nn.SiLU(), nn.Linear(d, d))
        self.build_trunk(spec, spec.num_classes)
        self.class_embed = nn.Parameter(initial_class_embedding(spec.num_classes, d))

    def targets(self) -> torch.Tensor:
        """The normalised class embeddings, (K, D): the clean targets y and the basis of the denoised estimate."""
        return F.normalize(self.class_embed, dim=1)

    def forward(
        self,
        images: torch.Tensor,
        z_in: torch.Tensor,
        c_noise: torch.Tensor,
        skip: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """The label token's logits (N, K); `skip` = (c_out (N, 1), c_skip * z (N, D)): the output reads
        `c_out * F + c_skip * z` instead of the token's features F alone."""
        patches = self.patch_embed(images).flatten(2).transpose(1, 2) + self.pos_embed  # (N, T, D)
        label = self.label_in(z_in)[:, None, :] + self.label_pos  # (N, 1, D)
        tokens = torch.cat([label, patches], dim=1)  # (N, 1 + T, D)
        cond = self.noise_embed(fourier_features(c_noise))  # (N, D)
        features = self.run_layers(tokens, cond)[:, 0]  # (N, D)
        if skip is not None:
            c_out, skipped = skip
            features = c_out * features + skipped
        return self.project_out(features[:, None], cond)[:, 0]


class LabelDenoiser(nn.Module):
    """EDM preconditioning of the label: `forward(z, sigma, images)` -> logits; `denoise` -> the estimate of y.
    `noise_free`: the backprop baseline, which sees neither z nor sigma (an ordinary classifier). `skip`: the output
    reads `c_out * F + c_skip * z` (the official code's form, `classification.output: skip`)."""

    def __init__(self, net: LabelDenoiserNet, sigma_data: float, *, noise_free: bool = False, skip: bool = False):
        super().__init__()
        self.net = net
        self.sigma_data = sigma_data
        self.noise_free = noise_free
        self.skip = skip and not noise_free

    def forward(self, z: torch.Tensor, sigma: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        if self.noise_free:
            return self.net(images, torch.zeros_like(z), torch.zeros(len(z), dtype=z.dtype, device=z.device))
        sigma = sigma.reshape(-1, 1).to(z.dtype)
        c_skip, c_out, c_in, c_noise = edm_scalings(sigma, self.sigma_data)
        return self.net(images, c_in * z, c_noise.flatten(), (c_out, c_skip * z) if self.skip else None)

    def denoise(self, z: torch.Tensor, sigma: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return expected_embedding(self(z, sigma, images), self.net.targets())


def expected_embedding(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The denoised estimate of y: the class-probability-weighted mean of the normalised embeddings, (N, D)."""
    return logits.softmax(dim=1) @ targets


def label_readability(sigma: float, targets: torch.Tensor, *, samples: int, generator: torch.Generator) -> float:
    """How much of the label `z = y + sigma * eps` gives away alone: the accuracy of the nearest-target decision
    (argmax <z, y_k>, the Bayes rule for equal-norm targets and equal priors) over uniformly drawn labels. Near 1 a
    block can copy the label from z; near 1/K only the image decides. Places the task's training noise."""
    labels = torch.randint(0, len(targets), (samples,), generator=generator, device="cpu")
    z = targets[labels] + sigma * torch.randn(samples, targets.shape[1], generator=generator, device="cpu")
    return (z @ targets.T).argmax(dim=1).eq(labels).double().mean().item()


def label_denoising_loss(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    sigma: torch.Tensor,
    eps: torch.Tensor,
    sigma_data: float,
) -> torch.Tensor:
    """mean(w(sigma) * CE(logits(normalize(E)[label] + sigma * eps), label))."""
    targets = getattr(model, "module", model).net.targets()  # through a DDP wrapper too
    z = targets[labels] + sigma[:, None] * eps
    logits = model(z, sigma, images)
    return (loss_weight(sigma, sigma_data) * F.cross_entropy(logits, labels, reduction="none")).mean()


OBJECTIVES = ("label_denoising", "backprop")
OUTPUT_FORMS = ("features", "skip")


class Classification(EDMTask):
    name = "classification"
    section = "classification"
    section_model = ClassificationConfig
    outputs = frozenset({PREDICT})
    progress_metric = "accuracy"  # the block's own predictions on its training batch, at its own noise levels

    # `output` defaults to features here, not the config's skip: a block file from before the option was features
    def __init__(self, objective: str = "label_denoising", augment_shift: int = 0, output: str = "features"):
        if objective not in OBJECTIVES:
            raise ValueError(f"classification objective must be one of {OBJECTIVES}, got {objective!r}")
        if output not in OUTPUT_FORMS:
            raise ValueError(f"classification output must be one of {OUTPUT_FORMS}, got {output!r}")
        self.objective = objective
        self.augment_shift = augment_shift  # training only: random shifts of up to this many pixels
        self.output = output

    @classmethod
    def options_from(cls, config) -> dict:
        section = config.classification
        return {"objective": section.objective, "augment_shift": section.augment_shift, "output": section.output}

    @property
    def options(self) -> dict:
        return {"objective": self.objective, "augment_shift": self.augment_shift, "output": self.output}

    @classmethod
    def check_config(cls, config) -> None:
        if config.classification.objective == "backprop" and config.train.mode != "end_to_end":
            raise ValueError(
                "classification.objective backprop trains one network end to end with cross-entropy: it needs "
                f"train.mode end_to_end (got {config.train.mode})"
            )

    def tokens_per_example(self, spec: NetSpec) -> int:
        return (spec.image_size // spec.patch_size) ** 2 + 1  # the patches and the label token

    def network(self, spec: NetSpec, *, activation_checkpointing: bool = False) -> nn.Module:
        return LabelDenoiserNet(spec, activation_checkpointing=activation_checkpointing)

    def denoiser(self, net: nn.Module, sigma_data: float) -> nn.Module:
        return LabelDenoiser(net, sigma_data, noise_free=self.objective == "backprop", skip=self.output == "skip")

    def loss(
        self, model, images, labels, sigma, *, sigma_data: float, generator: torch.Generator, label_dropout: float
    ) -> torch.Tensor:
        width = model_width(model)
        images = random_shift(images, self.augment_shift, generator)
        if self.objective == "backprop":  # ordinary cross-entropy; the sigmas drawn for the batch are unused
            zeros = torch.zeros((len(labels), width), device=images.device)
            return F.cross_entropy(model(zeros, sigma, images), labels)
        eps = torch.randn((len(labels), width), generator=generator, device=images.device)
        return label_denoising_loss(model, images, labels, sigma, eps, sigma_data)

    def progress(self, model, images, labels, sigma, generator: torch.Generator) -> float:
        """Accuracy of the block's logits on a training batch whose labels are noised at the batch's sigmas."""
        width = model_width(model)
        eps = torch.randn((len(labels), width), generator=generator, device=images.device)
        targets = getattr(model, "module", model).net.targets()
        logits = model(targets[labels] + sigma[:, None] * eps, sigma, images)
        return float((logits.argmax(dim=1) == labels).float().mean())

    def preview(self, denoiser, images, labels, sigma_lo, sigma_hi, generator) -> None:
        return None  # per-block class probabilities are drawn at assembly (`coordinator.artefacts`)


def random_shift(images: torch.Tensor, shift: int, generator: torch.Generator) -> torch.Tensor:
    """Each image translated by its own (dy, dx) in [-shift, shift]^2, edges replicated (MNIST's border is its
    background): the usual augmentation for small image classifiers, used alike by every objective."""
    if shift == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (shift, shift, shift, shift), mode="replicate")
    offsets = torch.randint(0, 2 * shift + 1, (2, n), generator=generator, device=generator.device).to(images.device)
    rows = offsets[0][:, None] + torch.arange(h, device=images.device)  # (N, H)
    cols = offsets[1][:, None] + torch.arange(w, device=images.device)  # (N, W)
    picked = padded.permute(0, 2, 3, 1)[
        torch.arange(n, device=images.device)[:, None, None], rows[:, :, None], cols[:, None, :]
    ]
    return picked.permute(0, 3, 1, 2)


def model_width(model: nn.Module) -> int:
    return getattr(model, "module", model).net.spec.hidden_size


STARTS = ("noise", "zero")


@torch.no_grad()
def classify(
    assembled, images: torch.Tensor, sigmas: torch.Tensor, *, seed: int, start: str = "noise"
) -> tuple[torch.Tensor, list]:
    """(final logits (N, K), class probabilities after each step) through the assembled blocks: Euler steps in
    embedding space, each step calling the block that owns its sigma.

    `start="noise"` begins at `z = sigmas[0] * randn` (the paper's): the noise is carried down the chain and picks
    which label the ODE lands on, so the chain draws from the model's posterior and its accuracy is about the mean
    true-class probability. `start="zero"` begins at the noise's mean: one deterministic path, the estimate's most
    probable label refined block by block."""
    if start not in STARTS:
        raise ValueError(f"classification start must be one of {STARTS}, got {start!r}")
    width = assembled.blocks[0].net.spec.hidden_size
    generator = torch.Generator(device="cpu").manual_seed(seed)
    z = sigmas[0] * torch.randn((len(images), width), generator=generator, device="cpu")
    z = (z if start == "noise" else torch.zeros_like(z)).to(images.device)
    steps, logits = [], None
    for sigma, sigma_next in zip(sigmas[:-1].tolist(), sigmas[1:].tolist()):
        s = torch.full((len(images),), sigma, device=images.device)
        block = assembled.blocks[int(assembled.route(s[:1])[0])]
        logits = block(z, s, images)
        steps.append(logits.softmax(dim=1))
        z = euler_step(z, expected_embedding(logits, block.net.targets()), sigma, sigma_next)
    return logits, steps


def boundary_sigmas(boundaries: list[float]) -> torch.Tensor:
    """B + 1 descending noise levels that call each block exactly once: sigma_max, then every inner boundary (owned
    by the lower-noise block, the plan's tie-break), then 0. Any partition, float64."""
    return torch.tensor([*reversed(boundaries[1:]), 0.0], dtype=torch.float64, device="cpu")


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, num_bins: int) -> float:
    """ECE: the mean over equal-width confidence bins of |accuracy - confidence|, weighted by the bin's share."""
    confidence, predicted = probs.max(dim=1)
    correct = (predicted == labels).double()
    edges = torch.linspace(0, 1, num_bins + 1, dtype=torch.float64, device="cpu")
    ece = 0.0
    for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist()):
        inside = (confidence > lo) & (confidence <= hi) if lo > 0 else (confidence >= lo) & (confidence <= hi)
        if inside.any():
            share = inside.double().mean().item()
            ece += share * abs(correct[inside].mean().item() - confidence[inside].double().mean().item())
    return ece

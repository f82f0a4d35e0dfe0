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


MAX_INPUT_IMAGES = 100_000


def _png(path: Path, channels: int, size: int) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (size, size):
                raise ValueError(f"{path}: {image.size[0]}x{image.size[1]} pixels, the model takes {size}x{size}")
            pixels = np.asarray(image, dtype=np.float32)
    except (OSError, SyntaxError) as err:  # Pillow's errors for unreadable or truncated files
        raise ValueError(f"{path}: not a readable image ({err})") from None
    return pixels[None] if channels == 1 else pixels.transpose(2, 0, 1)


def load_images(path: str | Path, *, channels: int, size: int) -> torch.Tensor:
    """Images to label, as float32 (N, C, H, W) in [-1, 1]: an .npz holding `images` in that form, one PNG, or a
    folder of PNGs (sorted by name). Bad input raises ValueError naming the file and the reason."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() == ".png")
        if not files:
            raise ValueError(f"{path}: no .png files in this folder")
        if len(files) > MAX_INPUT_IMAGES:
            raise ValueError(f"{path}: {len(files)} images, at most {MAX_INPUT_IMAGES} per call")
        return torch.from_numpy(np.stack([_png(p, channels, size) for p in files])) / 127.5 - 1.0
    if path.suffix.lower() == ".png":
        return torch.from_numpy(_png(path, channels, size)[None]) / 127.5 - 1.0
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as data:
                if "images" not in data:
                    raise ValueError(f"{path}: no array named 'images' (has {sorted(data.files)})")
                images = data["images"]
        except (OSError, EOFError) as err:
            raise ValueError(f"{path}: not a readable .npz ({err})") from None
        if images.ndim != 4 or images.shape[1:] != (channels, size, size) or not np.issubdtype(images.dtype, np.number):
            raise ValueError(
                f"{path}: images of shape {images.shape} ({images.dtype}); the model takes "
                f"N x {channels} x {size} x {size} numbers in [-1, 1]"
            )
        if len(images) > MAX_INPUT_IMAGES:
            raise ValueError(f"{path}: {len(images)} images, at most {MAX_INPUT_IMAGES} per call")
        tensor = torch.from_numpy(images.astype(np.float32))
        if not torch.isfinite(tensor).all():
            raise ValueError(f"{path}: images hold NaN or infinite values")
        return tensor.clamp(-1, 1)
    raise ValueError(f"{path}: expected an .npz, a .png or a folder of PNGs")

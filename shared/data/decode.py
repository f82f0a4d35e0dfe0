"""A record's payload to the model's input: a float32 C x H x W array. Encoded images are decoded with Pillow,
converted to the configured channels (1: grayscale, 3: RGB), brought to the configured size and scaled from
[0, 255] to [-1, 1]; arrays (NumPy sources) are used as they are, only checked."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from shared.data.errors import DataError

RESIZE_MODES = ("none", "resize", "center_crop")
GRAY_MODES = ("1", "L", "LA", "I", "I;16", "F")
FORMATS = ("PNG", "JPEG")  # what Pillow may decode here (docs/data.md): nothing else it knows is even tried
MIN_PIXEL_LIMIT_SIDE = 4096  # an image may have up to max(4096, 16 x image_size)^2 pixels (measured before decoding)


def pixel_limit(image_size: int | None) -> int:
    side = max(MIN_PIXEL_LIMIT_SIDE, 16 * (image_size or 0))
    return side * side


@dataclass(frozen=True)
class Transform:
    channels: int | None = None  # None: keep the image's (grayscale stays 1, anything else becomes RGB)
    image_size: int | None = None  # None: keep the image's size (it must then be square)
    resize: str = "none"  # none | resize (squash to size) | center_crop (shorter side to size, then crop)

    def __call__(self, payload, where: str) -> np.ndarray:
        if callable(payload):  # a file read on demand
            payload = payload()
        if isinstance(payload, np.ndarray):
            return self._array(payload, where)
        return self._image(payload, where)

    def _image(self, payload, where: str) -> np.ndarray:
        if not isinstance(payload, (bytes, bytearray)):
            raise DataError(f"{where}: no image bytes (got {type(payload).__name__})")
        try:
            image = Image.open(io.BytesIO(payload), formats=FORMATS)
            width, height = image.size  # from the header: nothing is decoded yet
            if width * height > pixel_limit(self.image_size):
                raise DataError(
                    f"{where}: {width}x{height} pixels, more than the {pixel_limit(self.image_size):,} decoded per "
                    "image (16 x data.image_size per side, at least 4096)"
                )
            image.load()  # decodes now: a truncated file fails here, not later
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
            raise DataError(f"{where}: corrupt or truncated image, or not PNG or JPEG ({err})") from None
        if self.channels not in (None, 1, 3):
            raise DataError(f"{where}: data.channels {self.channels}: an image converts to 1 (grayscale) or 3 (RGB)")
        channels = self.channels or (1 if image.mode in GRAY_MODES else 3)
        image = image.convert("L" if channels == 1 else "RGB")
        image = self._sized(image, where)
        pixels = np.asarray(image, dtype=np.float32)
        pixels = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return pixels / np.float32(127.5) - np.float32(1.0)

    def _sized(self, image: Image.Image, where: str) -> Image.Image:
        width, height = image.size
        size = self.image_size
        if self.resize == "resize":
            return image.resize((size, size), Image.Resampling.BICUBIC) if (width, height) != (size, size) else image
        if self.resize == "center_crop":
            scale = size / min(width, height)
            if scale != 1:
                image = image.resize(
                    (max(size, round(width * scale)), max(size, round(height * scale))), Image.Resampling.BICUBIC
                )
                width, height = image.size
            left, top = (width - size) // 2, (height - size) // 2
            return image.crop((left, top, left + size, top + size))
        if width != height:
            raise DataError(f"{where}: {width}x{height} is not square; set data.resize (resize or center_crop)")
        if size is not None and width != size:
            raise DataError(
                f"{where}: {width}x{height}, expected {size}x{size} like the others; images of mixed sizes need "
                "data.resize (resize or center_crop) and data.image_size"
            )
        return image

    def _array(self, array: np.ndarray, where: str) -> np.ndarray:
        if array.ndim != 3:
            raise DataError(f"{where}: expected a C x H x W array, got shape {tuple(array.shape)}")
        channels, height, width = array.shape
        if self.channels is not None and channels != self.channels:
            raise DataError(
                f"{where}: {channels} channels, data.channels is {self.channels} (arrays are not converted)"
            )
        if height != width or (self.image_size is not None and height != self.image_size):
            raise DataError(f"{where}: {height}x{width}; arrays must be square and all one size (no resizing)")
        out = np.asarray(array, dtype=np.float32)
        if not np.isfinite(out).all():
            raise DataError(f"{where}: holds NaN or infinite values")
        return out

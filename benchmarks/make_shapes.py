"""A small labelled RGB image dataset to try "Train on your own data" with, written as a user's folder would be:
`python benchmarks/make_shapes.py OUT [--per-class N] [--size S]` writes OUT/<class>/<i>.png, SxS RGB (default 32),
four classes (circle, square, triangle, cross) of random colour, size and position on a random dark background, the
shapes scaled with S. Deterministic (seed 0); at S = 32 the same images as before S existed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "cross", "square", "triangle")
SIZE = 32


def draw_shape(kind: str, rng: np.random.Generator, size: int = SIZE) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(0, 90, 3))
    colour = tuple(int(v) for v in rng.integers(120, 256, 3))
    image = Image.new("RGB", (size, size), background)
    pen = ImageDraw.Draw(image)
    scale = size / SIZE
    r = int(rng.integers(round(6 * scale), round(12 * scale)))
    cx, cy = (int(v) for v in rng.integers(r + 1, size - r - 1, 2))
    if kind == "circle":
        pen.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif kind == "square":
        pen.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colour)
    elif kind == "triangle":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    else:
        w = max(2, r // 3)
        pen.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
        pen.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    return image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=1500)
    parser.add_argument("--size", type=int, default=SIZE, help="image side in pixels (at least 16)")
    args = parser.parse_args()
    if args.size < 16:
        parser.error(f"--size {args.size}: at least 16")
    rng = np.random.default_rng(0)
    for kind in CLASSES:
        (args.out / kind).mkdir(parents=True, exist_ok=True)
    for i in range(args.per_class):
        for kind in CLASSES:
            draw_shape(kind, rng, args.size).save(args.out / kind / f"{i:05d}.png")
    print(f"wrote {args.per_class * len(CLASSES)} images to {args.out}")


if __name__ == "__main__":
    main()

"""A demo image folder to try the "your own images" path without photos at hand: coloured
shapes (circles, squares, triangles...) of random colour, size and position on random
backgrounds, one subfolder per shape. Colour says nothing about the class; the shape does.

    from cifar_cnn.demo import make_shapes
    make_shapes("shapes/", per_class=50)
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SHAPES = ("circle", "square", "triangle", "star", "cross")


def _shape(draw: ImageDraw.ImageDraw, kind: str, cx: float, cy: float, r: float, angle: float, fill) -> None:
    if kind == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
        return
    if kind == "cross":
        w = r / 3
        for a in (angle, angle + np.pi / 2):
            dx, dy = np.cos(a), np.sin(a)
            px, py = -dy * w, dx * w
            draw.polygon([(cx - dx * r + px, cy - dy * r + py), (cx + dx * r + px, cy + dy * r + py),
                          (cx + dx * r - px, cy + dy * r - py), (cx - dx * r - px, cy - dy * r - py)], fill=fill)  # fmt: skip
        return
    corners = {"square": 4, "triangle": 3, "star": 10}[kind]
    radii = [r if i % 2 == 0 or kind != "star" else r * 0.45 for i in range(corners)]
    points = [(cx + q * np.cos(angle + 2 * np.pi * i / corners), cy + q * np.sin(angle + 2 * np.pi * i / corners))
              for i, q in enumerate(radii)]  # fmt: skip
    draw.polygon(points, fill=fill)


def shape_image(kind: str, rng: np.random.Generator, size: int = 64) -> Image.Image:
    """One RGB image of a shape of random colour, size, position and rotation."""
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(0, 3))):  # clutter: faint blobs that are not the shape
        x, y, q = rng.uniform(0, size, 3)
        tint = tuple(int(v) for v in np.clip(np.array(background) + rng.integers(-40, 40, 3), 0, 255))
        draw.ellipse((x - q / 4, y - q / 4, x + q / 4, y + q / 4), fill=tint)
    while True:  # a colour far enough from the background to be seen
        fill = rng.integers(0, 256, 3)
        if np.abs(fill - np.array(background)).sum() > 150:
            break
    r = rng.uniform(0.2, 0.4) * size
    cx, cy = rng.uniform(r, size - r, 2)
    _shape(draw, kind, cx, cy, r, rng.uniform(0, 2 * np.pi), tuple(int(v) for v in fill))
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(0, 0.8)))


def make_shapes(root: str | os.PathLike, per_class: int = 50, classes: tuple[str, ...] = SHAPES[:3],
                size: int = 64, seed: int = 0) -> Path:  # fmt: skip
    """Write `per_class` PNGs of each shape into root/<shape>/; returns root."""
    unknown = set(classes) - set(SHAPES)
    if unknown:
        raise ValueError(f"unknown shapes {sorted(unknown)}; choose from {', '.join(SHAPES)}")
    root = Path(root)
    rng = np.random.default_rng(seed)
    for kind in classes:
        (root / kind).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            shape_image(kind, rng, size).save(root / kind / f"{kind}_{i:04d}.png")
    return root

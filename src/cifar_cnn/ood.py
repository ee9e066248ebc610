"""An offline "none of these" set: images unrelated to what a model was trained on, to measure
how well the uncertainty score separates them from its test images (AUROC).

Natural images shipped with matplotlib (a portrait, a gift box, a logo, terrain and medical
scans rendered with colormaps), random crops of them, and synthetic images: noise, flat colors,
gradients, stripes, checkerboards and blobs. None is a CIFAR-10 class; for a model trained on
your own folder they are still "unrelated images" (unless your classes are portraits or maps).
Everything is made at the model's input size S: natural images are resized as predictions are
(`images.load_image`: shorter side to S, center crop), synthetic ones are drawn at S x S.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
from PIL import Image

from cifar_cnn.images import load_image


def _sample_data_dir() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "sample_data"


def _colormapped(a: np.ndarray, cmap: str) -> np.ndarray:
    import matplotlib

    a = a.astype(np.float64)
    a = (a - np.nanmin(a)) / max(np.nanmax(a) - np.nanmin(a), 1e-9)
    return (matplotlib.colormaps[cmap](np.nan_to_num(a))[..., :3] * 255).astype(np.uint8)


def natural_images() -> list[np.ndarray]:
    """Full-resolution RGB uint8 images from matplotlib's sample data."""
    d = _sample_data_dir()
    out = []
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        if (d / name).is_file():
            out.append(np.asarray(Image.open(d / name).convert("RGB")))
    for name, key, cmap in (
        ("jacksboro_fault_dem.npz", "elevation", "terrain"),
        ("topobathy.npz", "topo", "gist_earth"),
    ):
        if (d / name).is_file():
            with np.load(d / name) as z:
                out.append(_colormapped(z[key], cmap))
    if (d / "s1045.ima.gz").is_file():
        with gzip.open(d / "s1045.ima.gz") as f:
            mri = np.frombuffer(f.read(), np.uint16).reshape(256, 256)
        out.append(_colormapped(mri, "gray"))
    return out


def synthetic_images(n: int, rng: np.random.Generator, size: int = 32) -> list[np.ndarray]:
    """n uint8 (size, size, 3) images: noise, flat colors, gradients, stripes, checkerboards, blobs."""
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1.0)
    shape = (size, size, 3)
    makers = [
        lambda: rng.integers(0, 256, shape, dtype=np.uint8),  # uniform noise
        lambda: np.clip(rng.normal(128, 40, shape), 0, 255).astype(np.uint8),  # gaussian noise
        lambda: np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), shape).copy(),  # flat color
        lambda: (np.stack([xx, yy, 1 - xx], -1) * rng.uniform(0.3, 1, 3) * 255).astype(np.uint8),  # gradient
        lambda: ((np.sin(xx * rng.uniform(5, 40) + yy * rng.uniform(0, 20))[..., None] > 0)
                 * rng.integers(0, 256, 3)).astype(np.uint8),  # stripes
        lambda: ((((xx * rng.integers(2, 8)).astype(int) + (yy * rng.integers(2, 8)).astype(int)) % 2)[..., None]
                 * rng.integers(0, 256, 3)).astype(np.uint8),  # checkerboard
        lambda: (np.exp(-((xx - rng.uniform()) ** 2 + (yy - rng.uniform()) ** 2) * rng.uniform(5, 30))[..., None]
                 * rng.integers(0, 256, 3)).astype(np.uint8),  # blob
    ]  # fmt: skip
    return [makers[i % len(makers)]() for i in range(n)]


def out_of_distribution_set(n_synthetic: int = 700, crops_per_image: int = 50, seed: int = 0,
                            size: int = 32) -> np.ndarray:  # fmt: skip
    """uint8 (N, size, size, 3): the natural images whole and as random crops, plus synthetic ones.
    `size`: the model's input size (`clf.input_size`)."""
    rng = np.random.default_rng(seed)
    images = []
    for full in natural_images():
        images.append(load_image(full, size))
        h, w = full.shape[:2]
        for _ in range(crops_per_image):
            side = int(rng.uniform(0.2, 0.7) * min(h, w))
            y, x = rng.integers(0, h - side + 1), rng.integers(0, w - side + 1)
            images.append(load_image(np.ascontiguousarray(full[y : y + side, x : x + side]), size))
    images += synthetic_images(n_synthetic, rng, size)
    return np.stack(images)


def auroc(in_scores: np.ndarray, out_scores: np.ndarray) -> float:
    """Probability that an in-distribution image scores higher than an outlier (ties count half)."""
    scores = np.concatenate([in_scores, out_scores])
    _, index, counts = np.unique(scores, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[index]  # 1-based ranks, ties share their mean
    n_in, n_out = len(in_scores), len(out_scores)
    return float((ranks[:n_in].sum() - n_in * (n_in + 1) / 2) / (n_in * n_out))

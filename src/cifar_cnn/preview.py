"""`cifar-cnn data preview`: look at the data and at what the augmentation does to it.

Works for any class set and image size. Figures are drawn with matplotlib's object-oriented API
(`matplotlib.figure.Figure`, no pyplot) straight to PNG, so no backend is switched.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from cifar_cnn.preprocess import (
    batch_blur,
    batch_color_jitter,
    batch_flip,
    batch_noise,
    batch_translate,
    reflect_pad,
)
from cifar_cnn.recipes import get_recipe

MAX_CLASSES = 30  # rows of the training-images grid; more classes: the first ones


def save_previews(images: np.ndarray, labels: np.ndarray, out_dir: str | Path, classes: Sequence[str] | None = None,
                  recipe: str = "fast", per_class: int = 8, seed: int = 0) -> list[Path]:  # fmt: skip
    """Write `training_images.png` (a row of images per class) and `augmentation.png` (what the
    recipe's augmentation does) for uint8 images (N, S, S, 3) of any size S.

    Args:
        classes: the class names, indexed by label (e.g. `dataset.classes`, `clf.classes`, or
            `data.CLASS_NAMES` for CIFAR-10); None names them by their label number.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images = np.asarray(images)
    labels = np.asarray(labels).ravel().astype(np.int64)
    n_classes = int(labels.max(initial=-1)) + 1
    names = [str(c) for c in classes] if classes is not None else [f"class {i}" for i in range(n_classes)]
    if n_classes > len(names):
        raise ValueError(f"labels go up to {n_classes - 1} but only {len(names)} class names were given")
    shown = names[:MAX_CLASSES]
    fig = Figure(figsize=(per_class * 1.1 + 1.5, len(shown) * 1.2 + 0.6))
    axes = fig.subplots(len(shown), per_class, squeeze=False)
    for c, (name, row) in enumerate(zip(shown, axes, strict=True)):
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        for ax, i in zip(row, np.flatnonzero(labels == c)[:per_class]):
            ax.imshow(images[i], interpolation="nearest")
        row[0].set_ylabel(name if len(name) <= 20 else name[:19] + "…", rotation=0, ha="right", va="center")
    more = f" (first {len(shown)} of {len(names)} classes)" if len(names) > len(shown) else ""
    fig.suptitle(f"Training images by class{more}")
    paths = [_save(fig, out / "training_images.png")]

    r = get_recipe(recipe)
    sample = images[:8]
    size = images.shape[1]
    x = torch.as_tensor(sample).permute(0, 3, 1, 2).float()  # augment raw pixels: easy to show
    g = torch.Generator().manual_seed(seed)
    rows = [("original", x)]
    if r.flip:
        rows.append(("random flip", batch_flip(x, g)))
    if r.translate:
        padded = reflect_pad(x, r.translate)
        rows += [(f"translate ±{r.translate}px ({i + 1})", batch_translate(padded, size, g)) for i in range(2)]
    raw = ((0.0, 0.0, 0.0), (1 / 255, 1 / 255, 1 / 255))  # the photometric steps' mean/std for raw pixels
    if r.color_jitter:
        rows.append((f"colour jitter ±{r.color_jitter:.0%}", batch_color_jitter(x, r.color_jitter, *raw, g)))
    if r.noise:
        rows.append(("noise (every image here)", batch_noise(x, 1.0, *raw, g)))
    if r.blur:
        rows.append(("blur (every image here)", batch_blur(x, 1.0, g)))
    fig = Figure(figsize=(len(sample) * 1.2 + 1.5, len(rows) * 1.35))
    axes = fig.subplots(len(rows), len(sample), squeeze=False)
    for (title, batch), row in zip(rows, axes, strict=True):
        for ax, img in zip(row, batch):
            ax.imshow(img.permute(1, 2, 0).clamp(0, 255).byte().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"Augmentation of the '{recipe}' recipe")
    paths.append(_save(fig, out / "augmentation.png"))
    return paths


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    return path

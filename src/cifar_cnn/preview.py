"""`cifar-cnn data preview`: look at the data and at what the augmentation does to it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from cifar_cnn.data import CLASS_NAMES
from cifar_cnn.preprocess import batch_flip, batch_translate, reflect_pad
from cifar_cnn.recipes import get_recipe


def save_previews(images: np.ndarray, labels: np.ndarray, out_dir: str | Path, recipe: str = "fast",
                  per_class: int = 8, seed: int = 0) -> list[Path]:  # fmt: skip
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels).ravel()
    fig, axes = plt.subplots(10, per_class, figsize=(per_class * 1.1, 12))
    for c, name in enumerate(CLASS_NAMES):
        for ax, i in zip(axes[c], np.flatnonzero(labels == c)[:per_class]):
            ax.imshow(images[i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        axes[c][0].set_ylabel(name, rotation=0, ha="right", va="center")
    fig.suptitle("Training images by class")
    paths = [_save(fig, out / "training_images.png")]

    r = get_recipe(recipe)
    sample = images[:8]
    x = torch.as_tensor(sample).permute(0, 3, 1, 2).float()  # augment raw pixels: easy to show
    g = torch.Generator().manual_seed(seed)
    rows = [("original", x)]
    if r.flip:
        rows.append(("random flip", batch_flip(x, g)))
    if r.translate:
        padded = reflect_pad(x, r.translate)
        rows += [(f"translate ±{r.translate}px ({i + 1})", batch_translate(padded, 32, g)) for i in range(2)]
    fig, axes = plt.subplots(len(rows), len(sample), figsize=(len(sample) * 1.2, len(rows) * 1.35), squeeze=False)
    for (title, batch), row in zip(rows, axes):
        for ax, img in zip(row, batch):
            ax.imshow(img.permute(1, 2, 0).clamp(0, 255).byte().numpy(), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
        row[0].set_ylabel(title, rotation=0, ha="right", va="center", fontsize=8)
    fig.suptitle(f"Augmentation of the '{recipe}' recipe")
    paths.append(_save(fig, out / "augmentation.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path

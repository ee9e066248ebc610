"""Test-set metrics: accuracy, per-class accuracy, confusion matrix; test-time augmentation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    inputs: torch.Tensor,
    tta: int = 0,
    batch_size: int = 1000,
    autocast: bool = False,
) -> torch.Tensor:
    """Logits (N, classes) for normalized inputs (N, 3, H, W), in float32 on the CPU.

    tta=1 averages with the mirror image; tta=2 also with 1-pixel translations (airbench's
    test-time augmentation, worth about +0.5 points for the fast recipe).
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    try:
        for start in range(0, len(inputs), batch_size):
            x = inputs[start : start + batch_size].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                outputs.append(_tta_logits(model, x, tta).float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, 10)


def _tta_logits(model: nn.Module, x: torch.Tensor, tta: int) -> torch.Tensor:
    def mirror(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * model(x) + 0.5 * model(x.flip(-1))

    if tta <= 0:
        return model(x)
    logits = mirror(x)
    if tta == 1:
        return logits
    padded = F.pad(x, (1,) * 4, mode="reflect")
    size = x.shape[-1]
    shifted = [padded[:, :, 0:size, 0:size], padded[:, :, 2 : size + 2, 2 : size + 2]]
    translated = torch.stack([mirror(s.contiguous(memory_format=torch.channels_last)) for s in shifted]).mean(0)
    return 0.5 * logits + 0.5 * translated


@dataclass
class Metrics:
    accuracy: float
    per_class_accuracy: list[float]
    confusion: np.ndarray  # (true, predicted) counts
    class_names: list[str]
    loss: float

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "n": self.n,
            "per_class_accuracy": dict(zip(self.class_names, self.per_class_accuracy, strict=True)),
            "confusion_matrix": self.confusion.tolist(),
        }

    def format(self) -> str:
        lines = [f"Test accuracy: {self.accuracy:.2%} on {self.n} images (loss {self.loss:.4f})", ""]
        lines.append("Per-class accuracy:")
        for name, acc in zip(self.class_names, self.per_class_accuracy, strict=True):
            lines.append(f"  {name:<12} {acc:7.2%}")
        lines += ["", "Confusion matrix (rows: true class, columns: predicted):"]
        short = [n[:5] for n in self.class_names]
        lines.append(" " * 12 + "".join(f"{s:>6}" for s in short))
        for name, row in zip(self.class_names, self.confusion, strict=True):
            lines.append(f"  {name:<10}" + "".join(f"{v:>6d}" for v in row))
        return "\n".join(lines)


def compute_metrics(logits: torch.Tensor, labels: np.ndarray | torch.Tensor, class_names: list[str]) -> Metrics:
    labels_t = torch.as_tensor(np.asarray(labels).ravel()).long()
    k = len(class_names)
    predicted = logits.argmax(1)
    confusion = torch.bincount(labels_t * k + predicted, minlength=k * k).view(k, k).numpy()
    totals = confusion.sum(1)
    per_class = [float(confusion[i, i] / totals[i]) if totals[i] else float("nan") for i in range(k)]
    return Metrics(
        accuracy=float((predicted == labels_t).float().mean()) if len(labels_t) else float("nan"),
        per_class_accuracy=per_class,
        confusion=confusion,
        class_names=list(class_names),
        loss=float(F.cross_entropy(logits, labels_t)) if len(labels_t) else float("nan"),
    )


def evaluation_set(clf, images=None, data=None, subset: int | None = None,
                   verbose: bool = True) -> tuple[np.ndarray, np.ndarray, str, list[str]]:  # fmt: skip
    """What to evaluate a `Classifier` on: (uint8 images, labels, a description, skipped files).

    - `images`: a labelled folder of the model's classes;
    - else a model trained on a folder: that folder's test split (its validation split when it
      has none), drawn again as in training;
    - else CIFAR-10's test set (from `data`, see `load_cifar10`).

    Raises:
        DataError: the training folder is gone (pass `images`), or the data cannot be read.
    """
    from cifar_cnn.data import CLASS_NAMES, load_cifar10
    from cifar_cnn.datasets import image_folder, labelled_images
    from cifar_cnn.errors import DataError

    problems: list[str] = []
    source = clf.card.data
    if images:
        x, y, problems = labelled_images(images, clf.classes, clf.input_size, progress=verbose)
        name = f"images in {images}"
    elif source.get("folder") and data is None:
        folder = source.get("name", "")
        if not Path(folder).is_dir():
            raise DataError(f"this model was trained on {folder}, which is not here: evaluate it with --images DIR")
        ds = image_folder(folder, image_size=clf.input_size, val_fraction=source.get("val_fraction", 0.2),
                          seed=source.get("seed", 0), progress=verbose)  # fmt: skip
        x, y = ds.test_x, ds.test_y
        name = f"{ds.test_split} split of {folder}"
    elif list(clf.classes) == list(CLASS_NAMES):
        _, (x, y) = load_cifar10(data, verbose=verbose)
        name = "CIFAR-10 test set"
    else:
        raise DataError(f"no evaluation data for this model's classes ({', '.join(clf.classes[:5])}...): "
                        "pass --images DIR with one subfolder per class")  # fmt: skip
    return x[:subset], np.asarray(y).ravel()[:subset], name, problems

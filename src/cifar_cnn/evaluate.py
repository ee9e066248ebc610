"""Test-set metrics: accuracy, per-class accuracy, confusion matrix; test-time augmentation."""

from __future__ import annotations

from dataclasses import dataclass

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

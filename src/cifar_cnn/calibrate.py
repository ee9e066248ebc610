"""Calibration: temperature scaling (Guo et al. 2017), expected calibration error, and the
threshold below which a prediction is flagged "uncertain" (maybe none of the 10 classes).

The temperature is fitted on training images held out from training (`Recipe.holdout`), never
on the test set, and stored in the model metadata; `Classifier` divides logits by it.
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
import torch.nn.functional as F

# Flag the least confident 10% of held-out CIFAR-10 images: most of them are mistakes, and
# photos of other things score lower still (see the AUROC in the report).
UNCERTAIN_QUANTILE = 0.10


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimizing the NLL of softmax(logits / T) (one parameter: cannot overfit)."""
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")
    labels = torch.as_tensor(labels).long().ravel()

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    """Weighted mean |accuracy - confidence| over equal-width confidence bins."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == np.asarray(labels).ravel()
    edges = np.linspace(0, 1, bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        mask = (confidence > lo) & (confidence <= hi)
        if mask.any():
            ece += mask.mean() * abs(correct[mask].mean() - confidence[mask].mean())
    return float(ece)


def reliability(probs: np.ndarray, labels: np.ndarray, bins: int = 15) -> dict:
    """Per-bin confidence, accuracy and count, for a reliability diagram."""
    confidence = probs.max(1)
    correct = probs.argmax(1) == np.asarray(labels).ravel()
    edges = np.linspace(0, 1, bins + 1)
    out = {"edges": edges.tolist(), "confidence": [], "accuracy": [], "count": []}
    for lo, hi in itertools.pairwise(edges):
        mask = (confidence > lo) & (confidence <= hi)
        out["count"].append(int(mask.sum()))
        out["confidence"].append(float(confidence[mask].mean()) if mask.any() else None)
        out["accuracy"].append(float(correct[mask].mean()) if mask.any() else None)
    return out


def calibrate(logits: torch.Tensor, labels) -> dict:
    """Fit the temperature and the uncertainty threshold on held-out logits; report ECE."""
    labels = np.asarray(labels).ravel()
    temperature = fit_temperature(logits, torch.as_tensor(labels))
    before = torch.softmax(logits, 1).numpy()
    after = torch.softmax(logits / temperature, 1).numpy()
    return {
        "temperature": temperature,
        "uncertain_threshold": float(np.quantile(after.max(1), UNCERTAIN_QUANTILE)),
        "holdout_images": len(labels),
        "holdout_accuracy": float((after.argmax(1) == labels).mean()),
        "holdout_ece_before": expected_calibration_error(before, labels),
        "holdout_ece_after": expected_calibration_error(after, labels),
    }

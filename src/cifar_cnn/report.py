"""`cifar-cnn report MODEL`: the figures and numbers people look at, as PNGs and one
self-contained HTML page (figures embedded), plus a short text summary.

Accuracy with a 95% Wilson interval; per-class precision, recall and F1; confusion heatmap and
the most confused pairs; grids of the worst mistakes and of correct predictions per class;
training curves from the model's saved history; calibration (ECE, reliability diagrams before
and after the stored temperature); and how well the uncertainty score tells CIFAR-10 images from
other things (AUROC on the offline set of `ood.py`).
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from cifar_cnn.calibrate import expected_calibration_error, reliability
from cifar_cnn.evaluate import Metrics, compute_metrics
from cifar_cnn.ood import auroc, out_of_distribution_set
from cifar_cnn.predict import Classifier


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% confidence interval of a proportion (Wilson score; sound near 0 and 1)."""
    if n == 0:
        return (math.nan, math.nan)
    p = correct / n
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (center - half, center + half)


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    tp = np.diag(confusion).astype(float)
    predicted = confusion.sum(0)
    actual = confusion.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": actual}


def most_confused(confusion: np.ndarray, names: list[str], k: int = 10) -> list[tuple[str, str, int]]:
    off = confusion.copy()
    np.fill_diagonal(off, 0)
    order = np.argsort(-off, axis=None)[:k]
    pairs = [(names[i // len(names)], names[i % len(names)], int(off.flat[i])) for i in order]
    return [p for p in pairs if p[2] > 0]


@dataclass
class Report:
    metrics: Metrics
    summary: dict
    figures: dict[str, Path] = field(default_factory=dict)
    html_path: Path | None = None

    def text(self) -> str:
        s = self.summary
        lo, hi = s["accuracy_ci95"]
        lines = [
            f"{s['model']} on {s['dataset']}: accuracy {s['accuracy']:.2%} (95% CI {lo:.2%} to {hi:.2%}, n={s['n']})",
            f"calibration: ECE {s['ece_before']:.4f} before, {s['ece_after']:.4f} after temperature {s['temperature']:.3f}",
        ]
        if "ood_auroc" in s:
            lines.append(f"none-of-these: AUROC {s['ood_auroc']:.3f} CIFAR-10 vs {s['ood_n']} other images; "
                         f"uncertain flag on {s['uncertain_rate_in']:.1%} of {s['dataset']} and "
                         f"{s['uncertain_rate_ood']:.1%} of the others")  # fmt: skip
        lines.append("most confused: " + ", ".join(f"{t}->{p} ({n})" for t, p, n in s["most_confused"][:5]))
        if self.html_path:
            lines.append(f"report: {self.html_path}")
        return "\n".join(lines)


def build_report(clf: Classifier, images: np.ndarray, labels: np.ndarray, out_dir: str | Path,
                 dataset: str = "CIFAR-10 test set", tta: int | None = None, ood: bool = True) -> Report:  # fmt: skip
    """Evaluate `clf` on uint8 images (N, 32, 32, 3) with labels (N, 1) and write the report."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    labels = np.asarray(labels).ravel()
    logits = clf.logits(images, tta=tta)
    metrics = compute_metrics(logits, labels, clf.classes)
    raw = torch.softmax(logits, 1).numpy()
    calibrated = torch.softmax(logits / clf.temperature, 1).numpy()
    names = clf.classes
    correct = int(np.trace(metrics.confusion))
    scores = per_class_scores(metrics.confusion)
    summary = {
        "model": clf.name, "dataset": dataset, "n": metrics.n, "accuracy": metrics.accuracy,
        "accuracy_ci95": wilson_interval(correct, metrics.n),
        "per_class": {n: {k: float(v[i]) for k, v in scores.items()} for i, n in enumerate(names)},
        "most_confused": most_confused(metrics.confusion, names),
        "temperature": clf.temperature, "uncertain_threshold": clf.uncertain_threshold,
        "ece_before": expected_calibration_error(raw, labels), "ece_after": expected_calibration_error(calibrated, labels),
        "confusion_matrix": metrics.confusion.tolist(),
    }  # fmt: skip
    figures = {
        "confusion": _confusion_figure(metrics.confusion, names, out / "confusion_matrix.png"),
        "mistakes": _mistakes_figure(images, labels, calibrated, names, out / "worst_mistakes.png"),
        "correct": _correct_figure(images, labels, calibrated, names, out / "correct_per_class.png"),
        "calibration": _reliability_figure(raw, calibrated, labels, clf.temperature, out / "reliability.png"),
    }
    history = clf.metadata.get("history") or []
    if history:
        figures["curves"] = _curves_figure(history, out / "training_curves.png")
    if ood:
        others = out_of_distribution_set()
        ood_probs = clf.predict_proba(others, tta=tta)
        in_conf, out_conf = calibrated.max(1), ood_probs.max(1)
        summary.update({"ood_auroc": auroc(in_conf, out_conf), "ood_n": len(others),
                        "uncertain_rate_in": float((in_conf < clf.uncertain_threshold).mean()),
                        "uncertain_rate_ood": float((out_conf < clf.uncertain_threshold).mean())})  # fmt: skip
        figures["ood"] = _ood_figure(in_conf, out_conf, clf.uncertain_threshold, summary["ood_auroc"], out / "ood.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    report = Report(metrics, summary, figures)
    report.html_path = _write_html(report, out / "report.html")
    return report


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _confusion_figure(confusion: np.ndarray, names: list[str], path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    ax.set_title("Confusion matrix")
    return _save(fig, path)


def _image_grid(items, path: Path, title: str, cols: int = 8) -> Path:
    rows = max(1, math.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 1.5, rows * 1.75))
    for ax in np.atleast_1d(axes).flat:
        ax.axis("off")
    for ax, (image, caption, color) in zip(np.atleast_1d(axes).flat, items):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=7, color=color)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _mistakes_figure(images, labels, probs, names, path: Path, k: int = 32) -> Path:
    predicted = probs.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:k]
    items = [(images[i], f"true {names[labels[i]]}\npred {names[predicted[i]]} {probs[i, predicted[i]]:.0%}", "darkred")
             for i in worst]  # fmt: skip
    return _image_grid(items, path, "Most confident mistakes")


def _correct_figure(images, labels, probs, names, path: Path, per_class: int = 6) -> Path:
    predicted = probs.argmax(1)
    items = []
    for c, name in enumerate(names):
        right = np.flatnonzero((predicted == c) & (labels == c))[:per_class]
        items += [(images[i], f"{name} {probs[i, c]:.0%}", "darkgreen") for i in right]
    return _image_grid(items, path, "Correct predictions per class", cols=per_class)


def _reliability_figure(raw, calibrated, labels, temperature: float, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.5))
    for ax, probs, title in ((axes[0], raw, "before"), (axes[1], calibrated, f"after temperature {temperature:.2f}")):
        r = reliability(probs, labels)
        centers = (np.array(r["edges"][:-1]) + np.array(r["edges"][1:])) / 2
        acc = [a if a is not None else 0 for a in r["accuracy"]]
        ax.bar(centers, acc, width=1 / len(centers), edgecolor="black", alpha=0.7, label="accuracy")
        ax.plot([0, 1], [0, 1], "k--", label="perfect calibration")
        ax.set_xlabel("confidence")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{title}: ECE {expected_calibration_error(probs, labels):.4f}")
        ax.legend(loc="upper left")
    fig.suptitle("Reliability diagram")
    return _save(fig, path)


def _curves_figure(history: list[dict], path: Path) -> Path:
    epochs = [h["epoch"] for h in history]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.5))
    axes[0].plot(epochs, [h["train_loss"] for h in history], "o-")
    axes[0].set_title("training loss")
    axes[1].plot(epochs, [h["train_accuracy"] for h in history], "o-", label="train (augmented)")
    if any("test_accuracy" in h for h in history):
        axes[1].plot(epochs, [h.get("test_accuracy", np.nan) for h in history], "o-", label="test")
    axes[1].set_title("accuracy")
    axes[1].legend()
    axes[2].plot(epochs, [h["lr"] for h in history], "o-")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return _save(fig, path)


def _ood_figure(in_conf, out_conf, threshold: float, score: float, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    bins = np.linspace(0, 1, 41)
    ax.hist(in_conf, bins=bins, alpha=0.6, density=True, label="CIFAR-10 test images")
    ax.hist(out_conf, bins=bins, alpha=0.6, density=True, label="other images (offline set)")
    ax.axvline(threshold, color="black", linestyle="--", label=f"uncertain below {threshold:.2f}")
    ax.set_xlabel("calibrated top probability")
    ax.set_title(f"None of these? AUROC {score:.3f}")
    ax.legend()
    return _save(fig, path)


def _write_html(report: Report, path: Path) -> Path:
    s = report.summary
    lo, hi = s["accuracy_ci95"]
    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{v['precision']:.3f}</td><td>{v['recall']:.3f}</td>"
        f"<td>{v['f1']:.3f}</td><td>{int(v['support'])}</td></tr>"
        for n, v in s["per_class"].items()
    )
    confused = "".join(f"<li>{html.escape(t)} &rarr; {html.escape(p)}: {n}</li>" for t, p, n in s["most_confused"])
    figures = "".join(
        f'<figure><img alt="{k}" src="data:image/png;base64,{base64.b64encode(f.read_bytes()).decode()}">'
        f"<figcaption>{f.name}</figcaption></figure>"
        for k, f in report.figures.items()
    )
    ood = (f"<p>None of these: AUROC <b>{s['ood_auroc']:.3f}</b> separating the {s['n']} evaluation images from "
           f"{s['ood_n']} images of other things; the uncertain flag (calibrated top probability below "
           f"{s['uncertain_threshold']:.2f}) fires on {s['uncertain_rate_in']:.1%} of the former and "
           f"{s['uncertain_rate_ood']:.1%} of the latter.</p>") if "ood_auroc" in s else ""  # fmt: skip
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>cifar-cnn report: {html.escape(s["model"])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:16px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}img{{max-width:100%}}figure{{margin:18px 0}}</style></head><body>
<h1>{html.escape(s["model"])} on {html.escape(s["dataset"])}</h1>
<p>Accuracy <b>{s["accuracy"]:.2%}</b> (95% CI {lo:.2%} to {hi:.2%}, n = {s["n"]}).
Calibration: ECE {s["ece_before"]:.4f} before and {s["ece_after"]:.4f} after temperature scaling (T = {s["temperature"]:.3f}, fitted on held-out training images).</p>
{ood}
<h2>Per class</h2><table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>
<h2>Most confused pairs (true &rarr; predicted)</h2><ul>{confused}</ul>
<h2>Figures</h2>{figures}</body></html>"""
    path.write_text(page)
    return path

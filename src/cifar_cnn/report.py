"""`cifar-cnn report MODEL`: the figures and numbers people look at, as PNGs and one
self-contained HTML page (figures embedded), plus a short text summary.

Works for any model: its class names, number of classes (2 to 1000) and input size come from
its card. Accuracy with a 95% Wilson interval; per-class precision, recall and F1, and a per-class
recall chart (to see, say, what class weights did for rare classes); confusion heatmap and the
most confused pairs; grids of the worst mistakes (the first 8 also with heatmaps of where the
model found the class it said and the true one, explain.py) and of correct predictions per class; training
curves from the model's saved history; calibration (ECE, reliability diagrams before and after
the stored temperature); and how well the uncertainty score tells the evaluation images from
unrelated ones (AUROC on the offline set of `ood.py`, made at the model's input size); and, when
given a `RobustnessResult` (`evaluate.corruption_accuracy`), a robustness section: a heatmap of
accuracy per corruption and severity, and the photo-pipeline accuracy beside the clean one.

Figures are drawn with matplotlib's object-oriented API (`matplotlib.figure.Figure`, no pyplot)
and written straight to PNG, so importing or running this never changes a notebook's backend.
"""

from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure

from cifar_cnn.calibrate import expected_calibration_error, reliability
from cifar_cnn.evaluate import Metrics, RobustnessResult, compute_metrics
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


MAX_ANNOTATED = 30  # the confusion matrix prints counts in its cells up to this many classes
MAX_TICK_LABELS = 60  # ...and names every row and column up to this many
MAX_RECALL_BARS = 40  # the recall chart shows every class up to this many, else the lowest ones
MAX_GRID_CLASSES = 20  # rows of the correct-predictions grid


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
            f"{s['model']} on {s['dataset']}: accuracy {s['accuracy']:.2%} (95% CI {lo:.2%} to {hi:.2%}, n={s['n']}, "
            f"{len(s['classes'])} classes)",
            _recall_line(s),
            f"calibration: ECE {s['ece_before']:.4f} before, {s['ece_after']:.4f} after temperature {s['temperature']:.3f}",
        ]
        if "ood_auroc" in s:
            lines.append(f"none-of-these: AUROC {s['ood_auroc']:.3f} {s['dataset']} vs {s['ood_n']} unrelated images; "
                         f"uncertain flag on {s['uncertain_rate_in']:.1%} of the former and "
                         f"{s['uncertain_rate_ood']:.1%} of the unrelated ones")  # fmt: skip
        confused = ", ".join(f"{t}->{p} ({n})" for t, p, n in s["most_confused"][:5])
        lines.append(f"most confused: {confused or 'none'}")
        if "robustness" in s:
            lines.append(_robustness_line(s["robustness"]))
        if self.html_path:
            lines.append(f"report: {self.html_path}")
        return "\n".join(lines)


def _recall_line(s: dict, limit: int = 12) -> str:
    """Per-class recall in class order (few classes) or the lowest ones (many)."""
    weights = " (trained with class weights)" if s.get("class_weights") else ""
    items = [(name, v["recall"], int(v["support"])) for name, v in s["per_class"].items() if v["support"] > 0]
    if len(items) > limit:
        items = sorted(items, key=lambda t: t[1])[:5]
        head = f"lowest per-class recall of {len(s['per_class'])} classes{weights}: "
    else:
        head = f"per-class recall{weights}: "
    return head + ", ".join(f"{name} {r:.1%} (n={n})" for name, r, n in items)


def build_report(clf: Classifier, images: np.ndarray, labels: np.ndarray, out_dir: str | Path,
                 dataset: str | None = None, tta: int | None = None, ood: bool = True,
                 robustness: RobustnessResult | None = None) -> Report:  # fmt: skip
    """Evaluate `clf` on uint8 images (N, S, S, 3) with labels (N,) or (N, 1) (indices into
    `clf.classes`) and write the report. Images of another size are resized to the model's input
    size S as predictions are (`Classifier.load_image`). `robustness` adds its section."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = clf.classes
    dataset = dataset or "evaluation images"
    images = _at_model_size(clf, images)
    labels = np.asarray(labels).ravel().astype(np.int64)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
        raise ValueError(f"labels must be class indices 0..{len(names) - 1} of the model's classes, "
                         f"got {labels.min()}..{labels.max()}")  # fmt: skip
    logits = clf.logits(images, tta=tta)
    metrics = compute_metrics(logits, labels, names)
    raw = torch.softmax(logits, 1).numpy()
    calibrated = torch.softmax(logits / clf.temperature, 1).numpy()
    correct = int(np.trace(metrics.confusion))
    scores = per_class_scores(metrics.confusion)
    class_weights = bool(clf.card.recipe.get("class_weights", False))
    summary = {
        "model": clf.name, "dataset": dataset, "classes": list(names), "input_size": clf.input_size,
        "n": metrics.n, "accuracy": metrics.accuracy, "accuracy_ci95": wilson_interval(correct, metrics.n),
        "class_weights": class_weights,
        "per_class": {n: {k: float(v[i]) for k, v in scores.items()} for i, n in enumerate(names)},
        "per_class_recall": {n: float(scores["recall"][i]) for i, n in enumerate(names)},
        "most_confused": most_confused(metrics.confusion, names),
        "temperature": clf.temperature, "uncertain_threshold": clf.uncertain_threshold,
        "ece_before": expected_calibration_error(raw, labels), "ece_after": expected_calibration_error(calibrated, labels),
        "confusion_matrix": metrics.confusion.tolist(),
    }  # fmt: skip
    figures = {
        "confusion": _confusion_figure(metrics.confusion, names, out / "confusion_matrix.png"),
        "recall": _recall_figure(scores, names, class_weights, out / "per_class_recall.png"),
        "mistakes": _mistakes_figure(images, labels, calibrated, names, out / "worst_mistakes.png"),
        "mistakes_explained": _explained_mistakes_figure(clf, images, labels, calibrated, out / "mistakes_why.png"),
        "correct": _correct_figure(images, labels, calibrated, names, out / "correct_per_class.png"),
        "calibration": _reliability_figure(raw, calibrated, labels, clf.temperature, out / "reliability.png"),
    }
    figures = {k: v for k, v in figures.items() if v is not None}
    history = clf.card.history or []
    if history:
        figures["curves"] = _curves_figure(history, out / "training_curves.png")
    if ood:
        summary_ood, figures["ood"] = _none_of_these(clf, images, calibrated, tta, dataset, out / "ood.png")
        summary.update(summary_ood)
    if robustness is not None:
        summary["robustness"] = robustness.to_dict()
        figures["robustness"] = _robustness_figure(robustness, out / "robustness.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8")
    report = Report(metrics, summary, figures)
    report.html_path = _write_html(report, out / "report.html")
    return report


def _at_model_size(clf: Classifier, images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    s = clf.input_size
    if images.ndim == 4 and images.shape[1:] == (s, s, 3) and images.dtype == np.uint8:
        return images
    if images.ndim != 4:
        raise ValueError(f"expected images (N, H, W, 3), got shape {images.shape}")
    return np.stack([clf.load_image(x) for x in images]) if len(images) else np.zeros((0, s, s, 3), np.uint8)


def _short(name: str, n: int = 18) -> str:
    return name if len(name) <= n else name[: n - 1] + "\u2026"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=110, bbox_inches="tight")  # a pyplot-free Figure: rendered with Agg, nothing to close
    return path


def _confusion_figure(confusion: np.ndarray, names: list[str], path: Path) -> Path:
    """Readable up to ~30 classes (counts in the cells), names on the axes up to 60, a heatmap beyond."""
    k = len(names)
    side = min(max(5.5, 0.42 * k + 2.5), 18.0)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.subplots()
    rates = confusion / np.maximum(confusion.sum(1, keepdims=True), 1)
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
    if k <= MAX_TICK_LABELS:
        size = 9 if k <= 15 else max(5.0, 9 - (k - 15) / 8)
        short = [_short(n) for n in names]
        ax.set_xticks(range(k), short, rotation=45 if k <= 30 else 90, ha="right" if k <= 30 else "center",
                      fontsize=size)  # fmt: skip
        ax.set_yticks(range(k), short, fontsize=size)
    else:
        step = math.ceil(k / 20)
        ax.set_xticks(range(0, k, step))
        ax.set_yticks(range(0, k, step))
    ax.set_xlabel("predicted" + (" (class index; names in summary.json)" if k > MAX_TICK_LABELS else ""))
    ax.set_ylabel("true")
    if k <= MAX_ANNOTATED:
        size = 8 if k <= 12 else 6 if k <= 20 else 5
        for i in range(k):
            for j in range(k):
                if confusion[i, j] or i == j:
                    ax.text(j, i, str(confusion[i, j]), ha="center", va="center", fontsize=size,
                            color="white" if rates[i, j] > 0.5 else "black")  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    ax.set_title(f"Confusion matrix ({k} classes)")
    return _save(fig, path)


def _recall_figure(scores: dict[str, np.ndarray], names: list[str], class_weights: bool, path: Path) -> Path:
    """Recall (share of each class's images predicted as that class), with its support."""
    recall, support = scores["recall"], scores["support"]
    order = [i for i in range(len(names)) if support[i] > 0]
    title = "Recall per class"
    if len(order) > MAX_RECALL_BARS:
        order = sorted(order, key=lambda i: recall[i])[:MAX_RECALL_BARS]
        title = f"The {MAX_RECALL_BARS} classes with the lowest recall (of {len(names)})"
    title += "; trained with class weights" if class_weights else "; trained without class weights"
    fig = Figure(figsize=(7.5, 0.3 * max(len(order), 2) + 1.3))
    ax = fig.subplots()
    y = np.arange(len(order))[::-1]  # first class on top
    ax.barh(y, [recall[i] for i in order], color="#2563eb")
    ax.set_yticks(y, [_short(names[i], 24) for i in order], fontsize=9 if len(order) <= 20 else 7)
    for yy, i in zip(y, order, strict=True):
        ax.text(min(recall[i] + 0.01, 0.8), yy, f"{recall[i]:.0%} of {int(support[i])}", va="center", fontsize=7)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, max(len(order), 1) - 0.4)
    ax.set_xlabel("recall: share of the class's images predicted as it")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(fig, path)


def _image_grid(items, path: Path, title: str, cols: int = 8) -> Path:
    rows = max(1, math.ceil(len(items) / cols))
    fig = Figure(figsize=(cols * 1.5, rows * 1.75))
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False))
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, caption, color) in zip(axes.flat, items):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(caption, fontsize=7, color=color)
    if not items:
        axes.flat[0].text(0, 0.5, "none", fontsize=12)
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def _mistakes_figure(images, labels, probs, names, path: Path, k: int = 32) -> Path:
    predicted = probs.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:k]
    items = [(images[i], f"true {_short(names[labels[i]])}\npred {_short(names[predicted[i]])} "
              f"{probs[i, predicted[i]]:.0%}", "darkred") for i in worst]  # fmt: skip
    return _image_grid(items, path, "Most confident mistakes" if items else "Most confident mistakes: no mistakes")


def _explained_mistakes_figure(clf: Classifier, images, labels, probs, path: Path, k: int = 8) -> Path | None:
    """The `k` most confident mistakes, each as the picture, where the model found the class it
    said, and where it found the true one (explain.py). None for a model explain cannot read."""
    from cifar_cnn.explain import ExplainError, cam_layer_name, overlay_small

    try:
        layer = cam_layer_name(clf)
    except ExplainError:
        return None
    names, predicted = clf.classes, probs.argmax(1)
    wrong = np.flatnonzero(predicted != labels)
    worst = wrong[np.argsort(-probs[wrong, predicted[wrong]])][:k]
    pairs = 2  # mistakes per row, 3 pictures each
    rows = max(1, math.ceil(len(worst) / pairs))
    fig = Figure(figsize=(pairs * 3 * 1.6, rows * 1.9))
    axes = fig.subplots(rows, pairs * 3, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for n, i in enumerate(worst):
        row, col = divmod(n, pairs)
        said, true = int(predicted[i]), int(labels[i])
        panels = [(images[i], f"true {_short(names[true], 14)}", "black"),
                  (overlay_small(clf, images[i], said, layer), f"said {_short(names[said], 12)} {probs[i, said]:.0%}", "darkred"),
                  (overlay_small(clf, images[i], true, layer), f"where {_short(names[true], 12)} is", "darkgreen")]  # fmt: skip
        for ax, (picture, caption, color) in zip(axes[row, col * 3 : col * 3 + 3], panels, strict=True):
            ax.imshow(picture, interpolation="nearest" if picture is images[i] else "bilinear")
            ax.set_title(caption, fontsize=7, color=color)
    if not len(worst):
        axes.flat[0].text(0, 0.5, "none", fontsize=12)
    fig.suptitle("Why the worst mistakes: where the model found the class it said, and the true class (red: most)",
                 fontsize=10)  # fmt: skip
    fig.tight_layout()
    return _save(fig, path)


def _correct_figure(images, labels, probs, names, path: Path, per_class: int = 6) -> Path:
    """One row per class (the first MAX_GRID_CLASSES), up to `per_class` correct predictions each."""
    predicted = probs.argmax(1)
    shown = names[:MAX_GRID_CLASSES]
    fig = Figure(figsize=(per_class * 1.3 + 1.6, len(shown) * 1.35 + 0.6))
    axes = fig.subplots(len(shown), per_class, squeeze=False)
    for c, (name, row) in enumerate(zip(shown, axes, strict=True)):
        right = np.flatnonzero((predicted == c) & (labels == c))[:per_class]
        for ax in row:
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
        for ax, i in zip(row, right):
            ax.imshow(images[i], interpolation="nearest")
            ax.set_title(f"{probs[i, c]:.0%}", fontsize=7, color="darkgreen")
        row[0].set_ylabel(_short(name), rotation=0, ha="right", va="center", fontsize=8)
        if not len(right):
            row[0].text(0.5, 0.5, "none", ha="center", va="center", fontsize=8, transform=row[0].transAxes)
    more = f" (first {len(shown)} of {len(names)} classes)" if len(names) > len(shown) else ""
    fig.suptitle(f"Correct predictions per class{more}")
    fig.tight_layout()
    return _save(fig, path)


def _reliability_figure(raw, calibrated, labels, temperature: float, path: Path) -> Path:
    fig = Figure(figsize=(10, 4.5))
    axes = fig.subplots(1, 2)
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
    fig = Figure(figsize=(13, 3.5))
    axes = fig.subplots(1, 3)
    axes[0].plot(epochs, [h.get("train_loss", np.nan) for h in history], "o-")
    axes[0].set_title("training loss")
    axes[1].plot(epochs, [h.get("train_accuracy", np.nan) for h in history], "o-", label="train (augmented)")
    for key, label in (("val_accuracy", "validation"), ("test_accuracy", "test")):
        if any(key in h for h in history):
            axes[1].plot(epochs, [h.get(key, np.nan) for h in history], "o-", label=label)
    axes[1].set_title("accuracy")
    axes[1].legend()
    axes[2].plot(epochs, [h.get("lr", np.nan) for h in history], "o-")
    axes[2].set_title("learning rate (end of epoch)")
    for ax in axes:
        ax.set_xlabel("epoch")
    fig.tight_layout()
    return _save(fig, path)


def _none_of_these(clf: Classifier, images, calibrated, tta, dataset: str, path: Path) -> tuple[dict, Path]:
    """How well the model's own "none of these" score tells the evaluation images from unrelated
    ones (ood.py's offline set): the novelty detector stored in the model file where it has one
    (novelty.py), else the calibrated top probability; and how often the flag fires on each."""
    others = out_of_distribution_set(size=clf.input_size)
    ood_logits, ood_novelty = clf.logits_and_novelty(others, tta)
    ood_probs = torch.softmax(ood_logits / clf.temperature, 1).numpy()
    if ood_novelty is not None:
        _, in_novelty = clf.logits_and_novelty(images, tta)
        in_score, out_score, threshold = -in_novelty, -ood_novelty, -clf.detector.threshold
        score_name = f"novelty detector ({clf.detector.score})"
    else:
        in_novelty, in_score, out_score = None, calibrated.max(1), ood_probs.max(1)
        threshold, score_name = clf.uncertain_threshold, "calibrated top probability"
    flagged_in = [p.uncertain for p in clf.to_predictions(calibrated, 1, in_novelty)]
    flagged_out = [p.uncertain for p in clf.to_predictions(ood_probs, 1, ood_novelty)]
    summary = {"ood_auroc": auroc(in_score, out_score), "ood_n": len(others), "ood_score": score_name,
               "uncertain_rate_in": float(np.mean(flagged_in)) if flagged_in else 0.0,
               "uncertain_rate_ood": float(np.mean(flagged_out))}  # fmt: skip
    figure = _ood_figure(in_score, out_score, threshold, summary["ood_auroc"], dataset, score_name, path)
    return summary, figure


def _ood_figure(in_score, out_score, threshold: float, auc: float, dataset: str, score_name: str, path: Path) -> Path:
    """Histograms of the score (higher: more like the training images) with the flag's threshold."""
    fig = Figure(figsize=(7, 4))
    ax = fig.subplots()
    both = np.concatenate([in_score, out_score, [threshold]])
    lo, hi = np.quantile(both, [0.005, 0.995]) if score_name.startswith("novelty") else (0.0, 1.0)
    bins = np.linspace(lo, hi, 41)
    ax.hist(np.clip(in_score, lo, hi), bins=bins, alpha=0.6, density=True, label=_short(dataset, 40))
    ax.hist(np.clip(out_score, lo, hi), bins=bins, alpha=0.6, density=True, label="unrelated images (offline set)")
    ax.axvline(threshold, color="black", linestyle="--", label="flagged below this")
    ax.set_xlabel(score_name + (": minus the novelty score" if score_name.startswith("novelty") else ""))
    ax.set_title(f"None of these? AUROC {auc:.3f}")
    ax.legend()
    return _save(fig, path)


def _write_html(report: Report, path: Path) -> Path:
    s = report.summary
    lo, hi = s["accuracy_ci95"]

    def cell(v: dict, key: str) -> str:
        return f"{v[key]:.3f}" if v["support"] > 0 or key == "precision" else "&ndash;"

    rows = "".join(
        f"<tr><td>{html.escape(n)}</td><td>{cell(v, 'precision')}</td><td>{cell(v, 'recall')}</td>"
        f"<td>{cell(v, 'f1')}</td><td>{int(v['support'])}</td></tr>"
        for n, v in s["per_class"].items()
    )
    confused = "".join(f"<li>{html.escape(t)} &rarr; {html.escape(p)}: {n}</li>" for t, p, n in s["most_confused"])
    figures = "".join(
        f'<figure><img alt="{html.escape(k)}" src="data:image/png;base64,{base64.b64encode(f.read_bytes()).decode()}">'
        f"<figcaption>{html.escape(f.name)}</figcaption></figure>"
        for k, f in report.figures.items()
    )
    ood = (f"<p>None of these: AUROC <b>{s['ood_auroc']:.3f}</b> separating the {s['n']} evaluation images from "
           f"{s['ood_n']} unrelated images by the {html.escape(s['ood_score'])}; the uncertain flag fires on "
           f"{s['uncertain_rate_in']:.1%} of the former and {s['uncertain_rate_ood']:.1%} of the latter.</p>"
           ) if "ood_auroc" in s else ""  # fmt: skip
    weights = ("trained with class weights (loss weighted by inverse class frequency)" if s["class_weights"]
               else "trained without class weights")  # fmt: skip
    size = s["input_size"]
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>cifar-cnn report: {html.escape(s["model"])}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:16px}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}
td:first-child{{text-align:left}}img{{max-width:100%}}figure{{margin:18px 0}}</style></head><body>
<h1>{html.escape(s["model"])} on {html.escape(s["dataset"])}</h1>
<p>{len(s["classes"])} classes, {size}&times;{size} px input. Accuracy <b>{s["accuracy"]:.2%}</b> (95% CI {lo:.2%} to {hi:.2%}, n = {s["n"]}).
Calibration: ECE {s["ece_before"]:.4f} before and {s["ece_after"]:.4f} after temperature scaling (T = {s["temperature"]:.3f}, fitted on held-out training images).</p>
{ood}
<h2>Per class</h2><p>Recall: the share of each class's images the model labels as that class; {weights}.</p>
<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>{rows}</table>
<h2>Most confused pairs (true &rarr; predicted)</h2><ul>{confused or "<li>none</li>"}</ul>
{_robustness_html(s["robustness"]) if "robustness" in s else ""}
<h2>Figures</h2>{figures}</body></html>"""
    path.write_text(page, encoding="utf-8")
    return path


# Robustness section: CIFAR-10-C's corruptions and the photo pipeline (evaluate.corruption_accuracy)


def _robustness_line(r: dict) -> str:
    photo = f", photo pipeline {r['photo_pipeline_accuracy']:.2%}" if r["photo_pipeline_accuracy"] is not None else ""
    worst = min(r["per_corruption"], key=r["per_corruption"].get)
    return (f"robustness ({r['n']} images): clean {r['clean_accuracy']:.2%}, mean corruption accuracy "
            f"{r['mean_corruption_accuracy']:.2%}{photo}; hardest: {worst} {r['per_corruption'][worst]:.1%}")  # fmt: skip


def _robustness_figure(result: RobustnessResult, path: Path) -> Path:
    """Heatmap: accuracy per corruption (rows) and severity (columns), with a mean column."""
    names, sevs = list(result.accuracy), result.severities
    grid = np.array([[result.accuracy[n][s] for s in sevs] + [result.per_corruption[n]] for n in names])
    fig = Figure(figsize=(1.0 * len(sevs) + 4.2, 0.36 * len(names) + 1.8))
    ax = fig.subplots()
    im = ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=max(result.clean_accuracy, 1e-6), aspect="auto")
    ax.set_xticks(range(len(sevs) + 1), [str(s) for s in sevs] + ["mean"])
    ax.set_yticks(range(len(names)), [n.replace("_", " ") for n in names], fontsize=9)
    ax.axvline(len(sevs) - 0.5, color="white", linewidth=3)
    for i in range(len(names)):
        for j in range(len(sevs) + 1):
            ax.text(j, i, f"{grid[i, j]:.0%}", ha="center", va="center", fontsize=8)
    ax.set_xlabel("severity")
    photo = f", photo pipeline {result.photo_accuracy:.1%}" if result.photo_accuracy is not None else ""
    ax.set_title(f"Accuracy under corruption ({result.n} images): clean {result.clean_accuracy:.1%}, "
                 f"mean {result.mean_corruption_accuracy:.1%}{photo}", fontsize=10)  # fmt: skip
    fig.colorbar(im, ax=ax, fraction=0.046, label="accuracy (scale tops at clean accuracy)")
    fig.tight_layout()
    return _save(fig, path)


def _robustness_html(r: dict) -> str:
    sevs = sorted({int(s) for row in r["accuracy"].values() for s in row})
    head = "".join(f"<th>{s}</th>" for s in sevs)
    rows = "".join(
        f"<tr><td>{html.escape(name)}</td>"
        + "".join(f"<td>{row[str(s)]:.1%}</td>" for s in sevs)
        + f"<td><b>{r['per_corruption'][name]:.1%}</b></td></tr>"
        for name, row in r["accuracy"].items()
    )
    photo = (f" Photo pipeline (each image upscaled to 512 px, saved as JPEG at quality 70 with 4:2:0 chroma, "
             f"then decoded and resized by the same code as <code>predict</code>): <b>{r['photo_pipeline_accuracy']:.2%}</b>."
             if r["photo_pipeline_accuracy"] is not None else "")  # fmt: skip
    return f"""<h2>Robustness</h2>
<p>CIFAR-10-C's 15 corruptions at severities {", ".join(map(str, sevs))} (Hendrycks &amp; Dietterich, 2019), computed
locally on {r["n"]} of the evaluation images (seed {r["seed"]}, test-time augmentation {r["tta"]}). Clean accuracy
<b>{r["clean_accuracy"]:.2%}</b>; mean corruption accuracy <b>{r["mean_corruption_accuracy"]:.2%}</b>.{photo}
The frost layer is synthesized, so these numbers are CIFAR-10-C-like rather than on the published set.</p>
<table><tr><th>corruption</th>{head}<th>mean</th></tr>{rows}</table>"""

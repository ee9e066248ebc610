"""Test-set metrics: accuracy, per-class accuracy, confusion matrix; test-time augmentation;
robustness to corruptions (CIFAR-10-C's protocol) and to the photo pipeline, cached."""

from __future__ import annotations

import hashlib
import json
import time
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
    tta_below: float = 0.0,
) -> torch.Tensor:
    """Logits (N, classes) for normalized inputs (N, 3, H, W), in float32 on the CPU.

    tta=1 averages with the mirror image; tta=2 also with 1-pixel translations (airbench's
    test-time augmentation, worth about +0.5 points for the fast recipe).
    tta_below > 0 makes it selective (as the Hive's CIFAR-10 speedrun does): one plain view of
    every image first, the other views only for images whose top softmax probability is below
    it. Confident images rarely change their answer under TTA, so accuracy holds at a fraction
    of the cost (README "Speed against airbench94_muon").
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outputs = []
    try:
        for start in range(0, len(inputs), batch_size):
            x = inputs[start : start + batch_size].to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                logits = (
                    _selective_tta_logits(model, x, tta, tta_below) if tta_below > 0 else _tta_logits(model, x, tta)
                )
                outputs.append(logits.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(outputs) if outputs else torch.empty(0, 10)


def _selective_tta_logits(model: nn.Module, x: torch.Tensor, tta: int, below: float) -> torch.Tensor:
    plain = model(x)
    if tta <= 0:
        return plain
    unsure = (plain.float().softmax(1).amax(1) < below).nonzero().squeeze(1)
    if len(unsure):
        subset = x[unsure].contiguous(memory_format=torch.channels_last)
        plain[unsure] = _tta_logits(model, subset, tta, plain=plain[unsure]).to(plain.dtype)
    return plain


def _tta_logits(model: nn.Module, x: torch.Tensor, tta: int, plain: torch.Tensor | None = None) -> torch.Tensor:
    """`plain`: model(x) when the caller has it already (saves one of the views)."""

    def mirror(x: torch.Tensor, plain: torch.Tensor | None = None) -> torch.Tensor:
        return 0.5 * (model(x) if plain is None else plain) + 0.5 * model(x.flip(-1))

    if tta <= 0:
        return model(x) if plain is None else plain
    logits = mirror(x, plain)
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


# ---------------------------------------------------------------------------------------------
# Robustness: CIFAR-10-C's corruptions and the photo pipeline (corruptions.py), results cached

ROBUSTNESS_BLOCK = 1000  # images corrupted and predicted at once; each block has its own random stream


@dataclass
class RobustnessResult:
    """Accuracy of one model on clean, corrupted and photo-pipeline copies of the same images."""

    model: str
    dataset: str
    n: int
    seed: int
    tta: int
    clean_accuracy: float
    accuracy: dict[str, dict[int, float]]  # corruption -> severity -> accuracy
    photo_accuracy: float | None
    seconds: float  # compute time of these numbers when they were first computed
    elapsed: float  # this call's time (about nothing when every number came from the cache)
    cached: bool  # every number came from the cache
    version: int
    cache_path: str | None = None

    @property
    def per_corruption(self) -> dict[str, float]:
        return {name: float(np.mean(list(row.values()))) for name, row in self.accuracy.items()}

    @property
    def mean_corruption_accuracy(self) -> float:
        """Mean over every (corruption, severity): CIFAR-10-C's headline "mCA"."""
        values = [v for row in self.accuracy.values() for v in row.values()]
        return float(np.mean(values)) if values else float("nan")

    @property
    def severities(self) -> list[int]:
        return sorted({s for row in self.accuracy.values() for s in row})

    def to_dict(self) -> dict:
        return {
            "model": self.model, "dataset": self.dataset, "n": self.n, "seed": self.seed, "tta": self.tta,
            "clean_accuracy": self.clean_accuracy, "mean_corruption_accuracy": self.mean_corruption_accuracy,
            "photo_pipeline_accuracy": self.photo_accuracy, "per_corruption": self.per_corruption,
            "accuracy": {name: {str(s): v for s, v in row.items()} for name, row in self.accuracy.items()},
            "seconds": self.seconds, "elapsed": self.elapsed, "cached": self.cached,
            "corruptions_version": self.version,
        }  # fmt: skip

    def format(self) -> str:
        sev = self.severities
        lines = [f"Robustness of {self.model} on {self.n} images of the {self.dataset} (tta={self.tta}, seed={self.seed}; "
                 "CIFAR-10-C's corruptions, computed locally)", "",
                 f"{'corruption':<18}" + "".join(f"{s:>8}" for s in sev) + f"{'mean':>8}"]  # fmt: skip
        for name, row in self.accuracy.items():
            lines.append(f"{name:<18}" + "".join(f"{row[s]:8.1%}" for s in sev) + f"{self.per_corruption[name]:8.1%}")
        lines += ["", f"clean accuracy:             {self.clean_accuracy:.2%}",
                  f"mean corruption accuracy:   {self.mean_corruption_accuracy:.2%} "
                  f"({len(self.accuracy)} corruptions x {len(sev)} severities)"]  # fmt: skip
        if self.photo_accuracy is not None:
            lines.append(f"photo pipeline accuracy:    {self.photo_accuracy:.2%} (upscaled to 512 px, JPEG quality 70, "
                         "resized back as predict does)")  # fmt: skip
        how = f"from the cache ({self.elapsed:.1f} s)" if self.cached else f"in {self.elapsed:.0f} s"
        lines.append(f"computed in {self.seconds:.0f} s the first time; this run {how}")
        return "\n".join(lines)


def model_fingerprint(clf) -> str:
    """sha256 of a Classifier's weights and card: the same model file always gives the same one. The
    card's `novelty` (the uncertain flag's detector) is left out: refitting it changes no accuracy."""
    card = {k: v for k, v in clf.card.to_dict().items() if k != "novelty"}
    h = hashlib.sha256(json.dumps(card, sort_keys=True, default=str).encode())
    for name, tensor in sorted(clf.model.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def _robustness_cache(clf, images: np.ndarray, labels: np.ndarray, seed: int, tta: int) -> Path:
    from cifar_cnn.corruptions import VERSION
    from cifar_cnn.data import cache_dir

    h = hashlib.sha256(f"v{VERSION} seed={seed} tta={tta} block={ROBUSTNESS_BLOCK} {model_fingerprint(clf)}".encode())
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(labels.astype(np.int64).tobytes())
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in clf.name)[:40]
    return cache_dir() / "robustness" / f"{safe}-{h.hexdigest()[:24]}.json"


def corruption_accuracy(clf, images: np.ndarray, labels: np.ndarray, corruptions: list[str] | None = None,
                        severities: tuple[int, ...] | list[int] = (1, 2, 3, 4, 5), seed: int = 0,
                        tta: int | None = None, subset: int | None = None, photo: bool = True, cache: bool = True,
                        progress: bool = True, dataset: str = "evaluation images",
                        compute: bool = True) -> RobustnessResult | None:  # fmt: skip
    """Accuracy of `clf` (its `predict_proba`: its own normalization and test-time augmentation,
    or `tta`) on `images` clean, under each corruption at each severity (the CIFAR-10-C
    protocol, `corruptions.py`) and through the photo pipeline.

    Args:
        images, labels: uint8 (N, S, S, 3) at the model's input size, class indices (N,) or (N, 1).
        corruptions: names from `corruptions.CORRUPTIONS` (default: all 15).
        subset: only the first `subset` images.
        cache: reuse and extend the results saved under `cache_dir()/robustness/`, keyed by the
            model's weights and card (but its detector), the images and labels, the seed, tta and the corruption code's
            version. Each number is saved as soon as it is computed, so an interrupted run resumes.
            False recomputes everything (and saves it).
        compute: False only reads the cache: None unless every number asked for is there.

    Raises:
        ValueError: images not at the model's input size, labels of another length, an unknown
            corruption or a severity outside 1-5.
    """
    from cifar_cnn.corruptions import check_names, check_severities

    start = time.perf_counter()
    names, sevs = check_names(corruptions), check_severities(severities)
    images, labels = np.asarray(images)[:subset], np.asarray(labels).ravel().astype(np.int64)[:subset]
    s = clf.input_size
    if images.ndim != 4 or images.shape[1:] != (s, s, 3) or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, {s}, {s}, 3) at the model's input size, got {images.dtype} "
                         f"{images.shape}: resize them with Classifier.load_image")  # fmt: skip
    if len(labels) != len(images) or not len(images):
        raise ValueError(f"{len(images)} images and {len(labels)} labels: need the same number, and at least one")
    tta = clf.tta if tta is None else tta
    path = _robustness_cache(clf, images, labels, seed, tta)
    entries = _read_entries(path) if cache else {}
    wanted = ["clean", *(["photo"] if photo else []), *(f"{n}/{v}" for n in names for v in sevs)]
    missing = [key for key in wanted if key not in entries]
    if missing and not compute:
        return None
    if missing:
        _compute_entries(clf, images, labels, missing, entries, path, seed, tta, progress)
    acc = {key: entries[key]["correct"] / entries[key]["n"] for key in wanted}
    return RobustnessResult(
        model=clf.name, dataset=dataset, n=len(images), seed=seed, tta=tta, clean_accuracy=acc["clean"],
        accuracy={n: {v: acc[f"{n}/{v}"] for v in sevs} for n in names},
        photo_accuracy=acc.get("photo"), seconds=sum(entries[k]["seconds"] for k in wanted),
        elapsed=time.perf_counter() - start, cached=not missing, version=_version(),
        cache_path=str(path),
    )  # fmt: skip


def _version() -> int:
    from cifar_cnn.corruptions import VERSION

    return VERSION


def _read_entries(path: Path) -> dict:
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) and entries.get("version") == _version() else {}


def _compute_entries(clf, images, labels, keys: list[str], entries: dict, path: Path, seed: int, tta: int,
                     progress: bool) -> None:  # fmt: skip
    """Compute each key ("clean", "photo" or "corruption/severity") block by block, saving the cache
    as each key is finished. Blocks of small sets are predicted together, up to ROBUSTNESS_BLOCK
    images at a time, so a small subset costs few model calls."""
    from tqdm.auto import tqdm

    from cifar_cnn.checkpoint import atomic_write_bytes

    starts = range(0, len(images), ROBUSTNESS_BLOCK)
    left = {key: len(starts) for key in keys}
    counts = {key: {"correct": 0, "n": 0, "seconds": 0.0} for key in keys}
    pending: list[tuple[str, np.ndarray, np.ndarray]] = []  # (key, images, labels) waiting for the model
    entries["version"] = _version()

    def flush() -> None:
        tic = time.perf_counter()
        predicted = clf.predict_proba(np.concatenate([x for _, x, _ in pending]), tta=tta).argmax(1)
        per_image = (time.perf_counter() - tic) / len(predicted)
        offset = 0
        for key, x, y in pending:
            c = counts[key]
            c["correct"] += int((predicted[offset : offset + len(x)] == y).sum())
            c["n"], c["seconds"], offset = c["n"] + len(x), c["seconds"] + per_image * len(x), offset + len(x)
            left[key] -= 1
            if not left[key]:
                entries[key] = c
                atomic_write_bytes(path, json.dumps(entries, indent=1).encode())
        pending.clear()
        bar.update(len(predicted))

    with tqdm(total=len(keys) * len(images), desc="robustness", unit="img", disable=not progress,
              dynamic_ncols=True) as bar:  # fmt: skip
        for key in keys:
            bar.set_postfix_str(key)
            for k, i in enumerate(starts):
                tic = time.perf_counter()
                x = _shifted(clf, images[i : i + ROBUSTNESS_BLOCK], key, seed, stream=k)
                counts[key]["seconds"] += time.perf_counter() - tic
                pending.append((key, x, labels[i : i + ROBUSTNESS_BLOCK]))
                if sum(len(p[1]) for p in pending) >= ROBUSTNESS_BLOCK:
                    flush()
        if pending:
            flush()


def _shifted(clf, images: np.ndarray, key: str, seed: int, stream: int) -> np.ndarray:
    """`images` as `key` says: "clean", "photo" (the photo pipeline) or "corruption/severity"."""
    from cifar_cnn.corruptions import corrupt, photo_pipeline

    if key == "clean":
        return images
    if key == "photo":
        return photo_pipeline(images, load=clf.load_image)
    name, severity = key.split("/")
    return corrupt(images, name, int(severity), seed=seed, stream=stream)

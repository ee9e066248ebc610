"""Which score should raise the `uncertain` flag? Each candidate of `cifar_cnn.novelty`, fitted on
CIFAR-10 training images and thresholded on the model's validation split, measured against the
CIFAR-10 test set and the offline "none of these" sets of `cifar_cnn.ood`.

    .venv/bin/python bench/ood.py                      # the bundled `fast` model
    .venv/bin/python bench/ood.py runs/large/model.safetensors --fit-images 10000
    .venv/bin/python bench/ood.py old.safetensors --save-detector new.safetensors   # add the detector

For each score: AUROC (CIFAR-10 test images against each set; 1.0 = always scored less novel),
the false-alarm rate on CIFAR-10 test images at the threshold (the 95th percentile of the
validation images' scores, never the test set), the share of each set it flags, and the time to
score an image. Then what the model file's own flag says (its stored detector OR "torn": the
calibrated top probability below `uncertain_threshold`), with each reason's share. Writes
bench/results/ood-<cpu>-<timestamp>.{json,md} with the CPU model and load average.
`--save-detector OUT` also writes a copy of the model file with the default detector fitted as
`train` fits it (how the bundled `fast.safetensors` got its statistics; weights untouched).

Needs CIFAR-10 (CIFAR_CNN_DATA) and, for the full sets, `pip install 'cifar-cnn[bench]'` (scikit-image,
scikit-learn) and `apt-get install mate-backgrounds gnome-backgrounds ukui-wallpapers`; what was
found is recorded as the sets' composition.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

NOISE_AND_FLAT = ("uniform noise", "gaussian noise", "flat colour")


def cpu_name() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        from cifar_cnn.hardware import cpu_model

        return cpu_model()


def extract(clf, images: np.ndarray, stage: str | None) -> tuple[torch.Tensor, dict, float]:
    """(logits, features, seconds per image) with the model's own test-time augmentation."""
    from cifar_cnn.novelty import logits_and_features

    t0 = time.perf_counter()
    logits, features = logits_and_features(clf.model, clf.preprocess(images), tta=clf.tta, autocast=clf.bf16,
                                           stage=stage)  # fmt: skip
    if features is None:
        raise SystemExit(f"{clf.name}: no penultimate features to hook (a torch.export program?)")
    return logits, features, (time.perf_counter() - t0) / max(len(images), 1)


def evaluate_score(score: str, train, val, test, sets: dict, kinds: np.ndarray, clf, k: int,
                   stage: str | None) -> dict:  # fmt: skip
    """One score fitted, thresholded on val, measured on test and every set (and every natural
    source)."""
    from cifar_cnn.novelty import fit_detector
    from cifar_cnn.ood import SYNTHETIC_KINDS, auroc, composition

    t0 = time.perf_counter()
    detector = fit_detector(score, train, val, clf.card.num_classes, clf.temperature, stage=stage, k=k)
    fit_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    in_scores = detector.scores(*test, clf.temperature)
    per_image = (time.perf_counter() - t0) / len(in_scores)
    row = {"score": score, "threshold": detector.threshold, "fit_seconds": fit_seconds,
           "score_ms_per_image": 1000 * per_image, "false_alarms": float((in_scores > detector.threshold).mean()),
           "bytes": sum(t.numel() * t.element_size() for t in detector.stats.values()), "sets": {}}  # fmt: skip
    if score == "knn":
        row["k"] = k
    for name, (logits, features) in sets.items():
        out = detector.scores(logits, features, clf.temperature)
        row["sets"][name] = {"auroc": auroc(-in_scores, -out), "flagged": float((out > detector.threshold).mean())}
    natural, start, row["natural_sources"] = detector.scores(*sets["natural"], clf.temperature), 0, {}
    for source, n in composition()["natural"].items():
        part = natural[start : start + n]
        row["natural_sources"][source] = {
            "auroc": auroc(-in_scores, -part),
            "flagged": float((part > detector.threshold).mean()),
        }
        start += n
    out = detector.scores(*sets["synthetic"], clf.temperature)
    row["synthetic_kinds"] = {kind: {"auroc": auroc(-in_scores, -out[kinds == i]),
                                     "flagged": float((out[kinds == i] > detector.threshold).mean())}
                              for i, kind in enumerate(SYNTHETIC_KINDS)}  # fmt: skip
    flat = np.isin(kinds, [SYNTHETIC_KINDS.index(n) for n in NOISE_AND_FLAT])
    row["sets"]["noise+flat"] = {"auroc": auroc(-in_scores, -out[flat]),
                                 "flagged": float((out[flat] > detector.threshold).mean())}  # fmt: skip
    return row


def stored_flag(clf, extracted: dict[str, tuple]) -> dict:
    """What the model file's own `uncertain` flag says on each set (from its (logits, features)):
    rate and reasons."""
    out = {}
    for name, (logits, features) in extracted.items():
        novelty = clf.detector.scores(logits, features, clf.temperature) if clf.detector else None
        preds = clf.to_predictions(torch.softmax(logits / clf.temperature, 1).numpy(), 2, novelty)
        reasons = [p.reason or "" for p in preds]
        out[name] = {"uncertain": float(np.mean([p.uncertain for p in preds])),
                     "none_of_these": float(np.mean([r.startswith("looks like none") for r in reasons])),
                     "torn": float(np.mean([r.startswith("torn between") for r in reasons]))}  # fmt: skip
    return out


def save_with_detector(model: str, out: Path, detector, test_flagged: float) -> None:
    """A copy of the model file with `detector`'s statistics and card entry; weights untouched."""
    from cifar_cnn.card import ModelCard
    from cifar_cnn.checkpoint import load_tensors, save_tensors
    from cifar_cnn.novelty import PREFIX
    from cifar_cnn.pretrained import bundled_path, has_bundled

    path = bundled_path(model) if not Path(model).exists() and has_bundled(model) else Path(model)
    tensors, meta = load_tensors(path)
    ModelCard.from_dict(meta)  # a model file, not some other safetensors file
    meta = {k: v for k, v in meta.items() if k != "format_version"}  # the header as it was, plus the detector
    meta["novelty"] = detector.card() | {"test_flagged": test_flagged}
    weights = {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
    save_tensors(out, {**weights, **detector.tensors()}, meta)


def main() -> None:
    from cifar_cnn import load
    from cifar_cnn.datasets import cifar10
    from cifar_cnn.novelty import DEFAULT_SCORE, FIT_IMAGES, KNN_K, SCORES, STAGE_LAYERS
    from cifar_cnn.ood import SYNTHETIC_KINDS, composition, out_of_distribution_sets

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default="fast", help="model file, run folder or bundled name")
    p.add_argument("--fit-images", type=int, default=FIT_IMAGES, help="training images the statistics are fitted on")
    p.add_argument("--test-images", type=int, default=None, help="first N CIFAR-10 test images (default all)")
    p.add_argument("--scores", nargs="+", default=list(SCORES), choices=SCORES)
    p.add_argument("--knn-k", type=int, nargs="+", default=[1, KNN_K, 20])
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    p.add_argument("--save-detector", metavar="OUT", help="write a copy of the model file with the default detector")
    args = p.parse_args()

    clf = load(args.model)
    ds = cifar10(holdout=int(clf.card.recipe.get("holdout", 1000)), test_subset=args.test_images, verbose=False)
    pick = np.sort(np.random.default_rng(0).permutation(len(ds.train_x))[: args.fit_images])
    stage = clf.detector.stage if clf.detector else STAGE_LAYERS.get(clf.name)
    ood_images = out_of_distribution_sets(size=clf.input_size)
    train = (extract(clf, ds.train_x[pick], stage)[1], torch.as_tensor(ds.train_y[pick]).long())
    val = extract(clf, ds.val_x, stage)[:2]
    test_l, test_f, seconds = extract(clf, ds.test_x, stage)
    sets = {name: extract(clf, x, stage)[:2] for name, x in ood_images.items()}
    kinds = np.arange(len(ood_images["synthetic"])) % len(SYNTHETIC_KINDS)
    rows = []
    for score in args.scores:
        if score in ("stage", "combined", "combined_knn") and "stage" not in train[0]:
            continue
        for k in args.knn_k if score == "knn" else [KNN_K]:
            rows.append(evaluate_score(score, train, val, (test_l, test_f), sets, kinds, clf, k, stage))
            print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("synthetic_kinds", "natural_sources")}),
                  flush=True)  # fmt: skip
    if args.save_detector:
        from cifar_cnn.novelty import fit_detector

        score = DEFAULT_SCORE if "stage" in train[0] else "knn"
        detector = fit_detector(score, train, val, clf.card.num_classes, clf.temperature, stage=stage)
        flagged = float((detector.scores(test_l, test_f, clf.temperature) > detector.threshold).mean())
        save_with_detector(args.model, Path(args.save_detector), detector, flagged)
        clf = load(args.save_detector)
        print(f"wrote {args.save_detector} with the {score} detector (threshold {detector.threshold:.4g})")
    cpu = cpu_name()
    result = {
        "model": str(args.model), "model_name": clf.name, "tta": clf.tta, "cpu": cpu, "cores": os.cpu_count(),
        "load_average": os.getloadavg(), "torch": torch.__version__, "fit_images": len(pick),
        "val_images": len(ds.val_x), "test_images": len(ds.test_x), "forward_ms_per_image": 1000 * seconds,
        "composition": composition(), "set_sizes": {k: len(v) for k, v in ood_images.items()},
        "set_sha256": {k: hashlib.sha256(v.tobytes()).hexdigest() for k, v in ood_images.items()},
        "stored_detector": clf.card.novelty, "uncertain_threshold": clf.uncertain_threshold, "scores": rows,
        "stored_flag": stored_flag(clf, {"cifar10_test": (test_l, test_f), **sets}),
    }  # fmt: skip
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out = Path(args.out) / f"ood-{re.sub(r'[^a-z0-9]+', '-', cpu.lower()).strip('-')[:24]}-{stamp}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"wrote {out}.json and .md")


def _auroc_table(scores: list[dict], title: str, key: str) -> list[str]:
    """A markdown table: one row per score, one column per part of a set (`key`: its per-part AUROCs)."""
    parts = list(scores[0][key])
    lines = [f"{title}:", "", "| score | " + " | ".join(parts) + " |", "|---|" + "---|" * len(parts)]
    for row in scores:
        name = row["score"] + (f" (k={row['k']})" if "k" in row else "")
        lines.append(f"| {name} | " + " | ".join(f"{row[key][p]['auroc']:.3f}" for p in parts) + " |")
    return lines


def markdown(r: dict) -> str:
    sizes = r["set_sizes"]
    lines = [f"# Novelty scores for the `uncertain` flag: {r['model']} ({r['cpu']}, {r['cores']} cores, "
             f"load average {r['load_average'][0]:.1f})", "",
             f"Fitted on {r['fit_images']:,} CIFAR-10 training images, thresholds at the 95th percentile of "
             f"{r['val_images']:,} validation images, measured on {r['test_images']:,} test images against "
             f"natural ({sizes['natural']}), graphics ({sizes['graphics']}) and synthetic ({sizes['synthetic']}) "
             f"images; noise+flat: the uniform-noise, Gaussian-noise and flat-colour part of synthetic. "
             f"Test-time augmentation {r['tta']}; forward pass {r['forward_ms_per_image']:.2f} ms per image.", "",
             "| score | false alarms (test) | AUROC natural | AUROC graphics | AUROC synthetic | AUROC noise+flat "
             "| flagged natural | flagged graphics | flagged synthetic | flagged noise+flat | ms/image | stored |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for row in r["scores"]:
        s = row["sets"]
        name = row["score"] + (f" (k={row['k']})" if "k" in row else "")
        lines.append(f"| {name} | {row['false_alarms']:.1%} | " + " | ".join(f"{s[n]['auroc']:.3f}" for n in (
            "natural", "graphics", "synthetic", "noise+flat")) + " | " + " | ".join(
            f"{s[n]['flagged']:.1%}" for n in ("natural", "graphics", "synthetic", "noise+flat"))
            + f" | {row['score_ms_per_image']:.3f} | {row['bytes'] / 1024:.0f} KiB |")  # fmt: skip
    for title, key in (("AUROC per synthetic kind", "synthetic_kinds"), ("AUROC per natural source", "natural_sources")):
        lines += ["", *_auroc_table(r["scores"], title, key)]
    det = r["stored_detector"]
    lines += ["", f"The model file's flag: detector {det.get('score', 'none (probability threshold alone)')}"
              + (f", threshold {det['threshold']:.4g}" if "threshold" in det else "")
              + f", OR torn (calibrated top probability below {r['uncertain_threshold']:.3f}):", "",
              "| images | uncertain | looks like none of the classes | torn between two |", "|---|---|---|---|"]  # fmt: skip
    for name, f in r["stored_flag"].items():
        lines.append(f"| {name} | {f['uncertain']:.1%} | {f['none_of_these']:.1%} | {f['torn']:.1%} |")
    comp = r["composition"]
    lines += ["", "Sets (source: images, crops included): " + "; ".join(
        f"{s}: " + ", ".join(f"{k} {v}" for k, v in comp[s].items()) for s in comp) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

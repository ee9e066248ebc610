"""Selective test-time augmentation: what giving the TTA views only to unsure images costs in
accuracy and saves in time, on the CIFAR-10 test set with the bundled models.

    .venv/bin/python bench/selective_tta.py        # writes bench/results/selective-tta-<cpu>-<date>.md

For each model: one plain view (tta 0), every view (the recipe's tta 2: mirror x 3 translations),
and the selective evaluation `predict_logits(..., tta_below=t)` for several thresholds t: the
share of images that get the views, accuracy, and seconds. Timings alternate between the
variants over `--rounds` rounds (median), so a noisy machine hits them alike. The threshold is on
the raw softmax of a label-smoothed model (its top probability tops out near 0.8), not on the
calibrated probability `predict` shows.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import cpu_line, write_result

THRESHOLDS = (0.5, 0.6, 0.7, 0.8)


def main() -> None:
    import cifar_cnn
    from cifar_cnn.data import load_cifar10
    from cifar_cnn.evaluate import predict_logits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["fast", "robust"])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    (_, _), (images, labels) = load_cifar10(verbose=False)
    y = torch.as_tensor(labels.ravel()).long()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = [f"Selective TTA on the CIFAR-10 test set (10,000 images) on {cpu_line()}, torch {torch.__version__}, "
             f"{stamp}; seconds are medians of {args.rounds} alternating rounds (`bench/selective_tta.py`)", ""]  # fmt: skip
    for name in args.models:
        clf = cifar_cnn.load(name)
        x = clf.preprocess(images)
        bf16 = clf.bf16
        variants = [("plain view only (tta 0)", 0, 0.0), ("every view (tta 2)", 2, 0.0)]
        variants += [(f"selective, below {t}", 2, t) for t in THRESHOLDS]
        seconds: dict[str, list[float]] = {label: [] for label, _, _ in variants}
        logits: dict[str, torch.Tensor] = {}
        for _ in range(args.rounds):
            for label, tta, below in variants:
                t = time.perf_counter()
                logits[label] = predict_logits(clf.model, x, tta=tta, batch_size=1000, autocast=bf16, tta_below=below)
                seconds[label].append(time.perf_counter() - t)
                print(name, label, f"{seconds[label][-1]:.1f} s", flush=True)
        plain = logits[variants[0][0]]
        confidence = plain.softmax(1).amax(1)
        full_seconds = statistics.median(seconds[variants[1][0]])
        lines += [f"### `{name}`", "", "| evaluation | images given the views | accuracy | seconds | vs every view |",
                  "|---|---|---|---|---|"]  # fmt: skip
        for label, tta, below in variants:
            share = 0.0 if tta == 0 else 1.0 if below == 0 else float((confidence < below).float().mean())
            accuracy = float((logits[label].argmax(1) == y).float().mean())
            secs = statistics.median(seconds[label])
            lines.append(f"| {label} | {share:.1%} | {accuracy:.2%} | {secs:.1f} | {secs / full_seconds:.2f}x |")
        lines.append("")
    write_result(lines, args.out, "selective-tta", stamp)


if __name__ == "__main__":
    main()

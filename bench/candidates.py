"""Train the candidates for the default model and measure each the same way, in one run.

    .venv/bin/python bench/candidates.py --recipes fast robust large --seeds 0 --out /tmp/candidates
    .venv/bin/python bench/candidates.py --models src/cifar_cnn/pretrained/fast.safetensors   # measure only

Per candidate: clean test accuracy (its own TTA), mean accuracy over the 15 CIFAR-10-C corruptions
at 5 severities and through the photo pipeline (`evaluate.corruption_accuracy`, on the first
`--corruption-images` test images), the "none of these" AUROC of its stored flag per
out-of-distribution set (`ood.out_of_distribution_sets`) and its false alarms on the test set,
the latency of `predict` on one photo (median of 50, after warm-up), the file size, and the
training time. Everything lands in OUT/candidates.{json,md} after each candidate, so a run cut
short by a time limit keeps what it measured. Made for a GPU machine (one script, one run);
on 2 CPU cores `large` alone takes about two hours.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

PHOTO = Path(__file__).resolve().parents[1] / "tests" / "data" / "chelsea.jpg"


def measure(path: Path, x_test: np.ndarray, y_test: np.ndarray, corruption_images: int,
            corruption_tta: int | None = None, cache: bool = True) -> dict:  # fmt: skip
    import cifar_cnn
    from cifar_cnn.evaluate import corruption_accuracy
    from cifar_cnn.ood import auroc, out_of_distribution_sets

    clf = cifar_cnn.load(path)
    probs, novelty = clf.scores(x_test)
    predictions = clf.to_predictions(probs, 1, novelty)
    row = {"model_file": str(path), "bytes": os.path.getsize(path), "recipe": clf.card.recipe.get("name"),
           "epochs": clf.card.recipe.get("epochs"),
           "seed": clf.card.seed, "init": clf.card.init, "train_seconds": clf.card.train_seconds, "hardware": clf.card.hardware,
           "clean_accuracy": float((probs.argmax(1) == y_test).mean()),
           "false_alarms": float(np.mean([p.reason is not None and p.reason.startswith("looks like")
                                          for p in predictions])),
           "uncertain": float(np.mean([p.uncertain for p in predictions]))}  # fmt: skip
    in_score = -novelty if novelty is not None else probs.max(1)
    for name, images in out_of_distribution_sets(size=clf.input_size).items():
        out_probs, out_novelty = clf.scores(images)
        out_score = -out_novelty if out_novelty is not None else out_probs.max(1)
        row[f"auroc_{name}"] = auroc(in_score, out_score)
    robust = corruption_accuracy(clf, x_test, y_test, subset=corruption_images, progress=False, cache=cache,
                                 tta=corruption_tta)  # fmt: skip
    row |= {"corruption_accuracy": robust.mean_corruption_accuracy, "photo_accuracy": robust.photo_accuracy,
            "corruption_clean_accuracy": robust.clean_accuracy, "corruption_images": robust.n,
            "corruption_tta": robust.tta,
            "per_corruption": robust.per_corruption}  # fmt: skip
    for _ in range(5):
        clf.predict(PHOTO)
    times = []
    for _ in range(50):
        t = time.perf_counter()
        clf.predict(PHOTO)
        times.append(time.perf_counter() - t)
    row["latency_ms"] = float(np.median(times) * 1000)
    return row


def markdown(rows: list[dict], machine: str) -> str:
    lines = [f"# Candidates for the default model ({machine})", "",
             f"Corruptions on the first {rows[0]['corruption_images'] if rows else '?'} test images, "
             f"TTA {rows[0]['corruption_tta'] if rows else '?'}; the rest on all 10,000 with each model's TTA.", "",
             "| model | clean | mean corruption | photo pipeline | AUROC natural / graphics / synthetic | "
             "false alarms | latency ms | size MiB | train s |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        start = (
            ""
            if r.get("init", "scratch") == "scratch"
            else f", fine-tuned from {r['init'].removeprefix('pretrained:')}"
        )
        lines.append(f"| {r['recipe']} ({r['epochs']:g} epochs{start}) seed {r['seed']} | {r['clean_accuracy']:.2%} | {r['corruption_accuracy']:.2%} | "
                     f"{r['photo_accuracy']:.2%} | {r['auroc_natural']:.3f} / {r['auroc_graphics']:.3f} / "
                     f"{r['auroc_synthetic']:.3f} | {r['false_alarms']:.1%} | {r['latency_ms']:.1f} | "
                     f"{r['bytes'] / 2**20:.1f} | {r['train_seconds']:.0f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    import cifar_cnn
    from cifar_cnn.data import load_cifar10
    from cifar_cnn.hardware import choose_device, cpu_model

    p = argparse.ArgumentParser()
    p.add_argument("--recipes", nargs="*", default=["fast", "robust", "large"])
    p.add_argument("--seeds", nargs="*", type=int, default=[0])
    p.add_argument("--models", nargs="*", default=[], help="model files to measure as they are (no training)")
    p.add_argument("--corruption-images", type=int, default=2000)
    p.add_argument("--corruption-tta", type=int, choices=[0, 1, 2], help="TTA for the corruption runs (default: "
                   "each model's own; 0 is 6x cheaper on a CPU)")  # fmt: skip
    p.add_argument(
        "--fresh",
        action="store_true",
        help="recompute corruption accuracies even where "
        "cached (the cache is keyed by the model's weights, images, seed and TTA)",
    )
    p.add_argument("--out", required=True)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = choose_device()
    machine = (torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model()) + f", {platform.node()}"
    _, (x_test, y_test) = load_cifar10(verbose=False)
    y_test = y_test.ravel()
    files = [Path(m) for m in args.models]
    rows = []

    def record(path: Path) -> None:
        rows.append(measure(path, x_test, y_test, args.corruption_images, args.corruption_tta, cache=not args.fresh))
        (out / "candidates.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=1))
        (out / "candidates.md").write_text(markdown(rows, machine))
        print(markdown(rows, machine), flush=True)

    for path in files:
        record(path)
    for recipe in args.recipes:
        for seed in args.seeds:
            run = out / f"{recipe}-seed{seed}"
            result = cifar_cnn.train(recipe, seed=seed, out_dir=run, progress=False)
            print(f"{recipe} seed {seed}: {result.metrics.accuracy:.2%} in {result.train_seconds:.0f} s", flush=True)
            record(result.model_path)


if __name__ == "__main__":
    main()

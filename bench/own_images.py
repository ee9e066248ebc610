"""Accuracy against images per class on real image sets, from scratch and fine-tuned from the
bundled CIFAR-10 weights, with training times.

    .venv/bin/python bench/own_images.py /work/datasets --sets fashion-mnist emoji --sizes 10 25 50 100 all

Each set is a folder made by bench/make_image_sets.py: SET/train/<class>/..., SET/test/<class>/...,
and SET-nN/ with N training images per class and the same test split. Every run uses the
`fast` recipe at 32 px with the schedule fitted to the folder (as `cifar-cnn train --data`
chooses it), 20% of the training folder held out for validation, and reports accuracy on the
set's test split. Writes bench/results/own-images-<cpu>-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import time
from datetime import UTC, datetime
from pathlib import Path


def one_run(folder: Path, init: str, seed: int) -> dict:
    import cifar_cnn

    t0 = time.perf_counter()
    result = cifar_cnn.train("fast", data=str(folder), init=init, seed=seed, progress=False)
    return {"folder": folder.name, "init": init, "seed": seed, "test_accuracy": result.metrics.accuracy,
            "train_images": result.card.data["train_images"], "epochs": result.card.recipe["epochs"],
            "batch_size": result.card.recipe["batch_size"], "train_seconds": result.train_seconds,
            "wall_seconds": time.perf_counter() - t0}  # fmt: skip


def main() -> None:
    from cifar_cnn.hardware import cpu_model

    p = argparse.ArgumentParser()
    p.add_argument("root", help="folder holding the sets (bench/make_image_sets.py)")
    p.add_argument("--sets", nargs="+", default=["fashion-mnist", "emoji"])
    p.add_argument("--sizes", nargs="+", default=["10", "25", "50", "100", "all"])
    p.add_argument("--inits", nargs="+", default=["scratch", "pretrained"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args()
    root = Path(args.root)
    cpu = cpu_model()
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out = Path(args.out) / f"own-images-{cpu.lower().replace(' ', '-')[:24]}-{stamp}"
    runs = []
    for name in args.sets:
        for size in args.sizes:
            folder = root / (name if size == "all" else f"{name}-n{size}")
            for init in args.inits:
                run = {"set": name, "per_class": size, **one_run(folder, init, args.seed)}
                runs.append(run)
                print(json.dumps(run), flush=True)
                out.with_suffix(".json").write_text(json.dumps({"cpu": cpu, "runs": runs}, indent=1))
    lines = [f"# Your own images: accuracy against training images per class ({cpu}, 2 cores)", "",
             "Recipe `fast` at 32 px, schedule fitted to the folder; accuracy on each set's test split "
             "(seed 0). Per class: training images before the 20% validation hold-out.", "",
             "| set | per class | train images | scratch | fine-tuned | scratch s | fine-tuned s |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name in args.sets:
        for size in args.sizes:
            r = {x["init"]: x for x in runs if x["set"] == name and x["per_class"] == size}
            if {"scratch", "pretrained"} <= set(r):
                s, f = r["scratch"], r["pretrained"]
                lines.append(f"| {name} | {size} | {s['train_images']} | {s['test_accuracy']:.1%} | "
                             f"{f['test_accuracy']:.1%} | {s['train_seconds']:.0f} | {f['train_seconds']:.0f} |")  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

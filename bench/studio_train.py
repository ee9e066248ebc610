"""Studio: seconds from pressing Train to the trained model in place, as the page's button runs it.

    .venv/bin/python bench/studio_train.py --cases 3x30 10x100 --repeats 5 2

Each case builds a fresh studio project of coloured shapes (`cifar_cnn.demo`, PNG uploads through
`Project.add_image`, as the page sends them) and times `studio.train(project).wait()`: reading
the images, fine-tuning from the bundled weights, calibration, evaluation and the swap into
`model/`. "10 x 100" uses the five shapes in colour and in grey. The load average at the start of
each run is recorded: torch's two threads wait on each other when the cores are shared, so only
runs on a quiet machine say what the code costs. Writes bench/results/studio-train-<cpu>-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import resource
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import ImageOps


def build_project(studio, n_classes: int, per_class: int, seed: int):
    from cifar_cnn.demo import SHAPES, shape_image

    project = studio.create(f"bench-{n_classes}x{per_class}")
    rng = np.random.default_rng(seed)
    kinds = [(s, False) for s in SHAPES] + [(s, True) for s in SHAPES]
    for shape, grey in kinds[:n_classes]:
        name = f"{shape} grey" if grey else shape
        project.add_class(name)
        for i in range(per_class):
            image = shape_image(shape, rng)
            if grey:
                image = ImageOps.grayscale(image).convert("RGB")
            buf = io.BytesIO()
            image.save(buf, "PNG")
            project.add_image(name, buf.getvalue(), f"{i}.png")
    return project


def one_run(n_classes: int, per_class: int, seed: int) -> dict:
    from cifar_cnn.studio import Studio

    with tempfile.TemporaryDirectory() as tmp:
        studio = Studio(Path(tmp) / "studio")
        project = build_project(studio, n_classes, per_class, seed)
        load = os.getloadavg()[0]
        cpu0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        job = studio.train(project.name).wait()
        seconds = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        if job.status != "done":
            raise SystemExit(f"training failed: {job.error}")
        evaluation = project.evaluation() or {}
        return {"classes": n_classes, "per_class": per_class, "seed": seed, "seconds": round(seconds, 2),
                "cpu_seconds": round(cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, 1),
                "train_seconds": evaluation.get("train_seconds"), "epochs": evaluation.get("epochs"),
                "batch_size": (evaluation.get("recipe") or {}).get("batch_size"),
                "train_images": evaluation.get("train_images"), "val_accuracy": evaluation.get("accuracy"),
                "load_average_at_start": round(load, 2)}  # fmt: skip


def main() -> None:
    from cifar_cnn.hardware import cpu_model

    p = argparse.ArgumentParser()
    p.add_argument("--cases", nargs="+", default=["3x30", "10x100"])
    p.add_argument("--repeats", nargs="+", type=int, default=[5, 2], help="runs per case, in order")
    p.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = p.parse_args()
    cpu = cpu_model()
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out = Path(args.out) / f"studio-train-{cpu.lower().replace(' ', '-')[:24]}-{stamp}"
    import torch

    runs = []
    for case, repeats in zip(args.cases, args.repeats + [args.repeats[-1]] * len(args.cases), strict=False):
        n_classes, per_class = (int(v) for v in case.split("x"))
        for seed in range(repeats):
            run = one_run(n_classes, per_class, seed)
            runs.append(run)
            print(json.dumps(run), flush=True)
            out.with_suffix(".json").write_text(json.dumps({"cpu": cpu, "threads": torch.get_num_threads(),
                                                            "runs": runs}, indent=1))  # fmt: skip
    lines = [f"# Studio: press Train to trained model ({cpu}, {torch.get_num_threads()} torch threads)", "",
             "Fresh project per run (coloured shapes as PNG uploads), `studio.train(project).wait()`; "
             "validation accuracy on the project's 20% hold-out.", "",
             "| classes x images | run | seconds | CPU s | train s | epochs | batch | val accuracy | load at start |",
             "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for i, r in enumerate(runs):
        lines.append(f"| {r['classes']} x {r['per_class']} | {i} | {r['seconds']:.1f} | {r['cpu_seconds']:.0f} | "
                     f"{r['train_seconds']:.1f} | {r['epochs']} | {r['batch_size']} | {r['val_accuracy']:.1%} | "
                     f"{r['load_average_at_start']:.2f} |")  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out}.md")


if __name__ == "__main__":
    main()

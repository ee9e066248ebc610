"""Robustness of a model: CIFAR-10-C's 15 corruptions at 5 severities and the photo pipeline,
computed locally on the CIFAR-10 test set (or a model's own evaluation data) by
`cifar_cnn.evaluate.corruption_accuracy`.

    .venv/bin/python bench/robustness.py                          # the bundled default model, all 10,000 images
    .venv/bin/python bench/robustness.py runs/large/model.safetensors --test-subset 2000 --tta 0

Every (corruption, severity) costs one pass over the images, 77 passes in all (with clean and
photo pipeline): time a small --test-subset first and scale (the result prints seconds per
10,000 images). Results are cached per model and data, so an interrupted run resumes and a
rerun is instant. Writes bench/results/robustness-<model>-<cpu>-<UTC time>.json and .md with
the CPU (lscpu) and the load average, since other jobs may share the machine.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def lscpu() -> dict[str, str]:
    """Model name, CPU family and model number as lscpu shows them."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"model_name": "unknown CPU"}
    fields = {"model_name": r"^Model name:\s*(.+)$", "family": r"^CPU family:\s*(.+)$", "model": r"^Model:\s*(.+)$"}
    found = {key: re.search(pattern, out, re.M) for key, pattern in fields.items()}
    return {key: m.group(1).strip() for key, m in found.items() if m}


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "src"], cwd=ROOT, capture_output=True, text=True).stdout
        return rev + ("+changes" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown(r: dict) -> str:
    res, cpu = r["result"], r["hardware"]["cpu"]
    sevs = sorted({int(s) for row in res["accuracy"].values() for s in row})
    lines = [
        f"# Robustness of `{r['model_path']}` ({res['model']})",
        "",
        f"{res['n']} images of the {res['dataset']}, test-time augmentation {res['tta']}, seed {res['seed']}, "
        f"corruptions v{res['corruptions_version']} (CIFAR-10-C's parameters; frost synthesized: CIFAR-10-C-like). "
        f"{r['date']}, code {r['code']}.",
        "",
        f"* clean accuracy: **{res['clean_accuracy']:.2%}**",
        f"* mean corruption accuracy: **{res['mean_corruption_accuracy']:.2%}** "
        f"({len(res['accuracy'])} corruptions x {len(sevs)} severities)",
        f"* photo pipeline (512 px bicubic, JPEG quality 70 4:2:0, back through `predict`'s resize): "
        f"**{res['photo_pipeline_accuracy']:.2%}**",
        f"* time: {res['seconds']:.0f} s to compute ({r['seconds_per_10k_images']:.0f} s per 10,000 images)"
        + (", this run read the cache" if res["cached"] else ""),
        f"* CPU: {cpu['model_name']} (family {cpu.get('family', '?')}, model {cpu.get('model', '?')}), "
        f"{r['hardware']['cpu_count']} cores, {r['hardware']['torch_threads']} torch threads, "
        f"{'bf16' if r['hardware']['bf16'] else 'fp32'}, torch {r['hardware']['torch']}",
        f"* load average (1 min) before / after: {r['load_before'][0]:.2f} / {r['load_after'][0]:.2f} "
        "(other jobs share the machine)",
        "",
        "| corruption | " + " | ".join(str(s) for s in sevs) + " | mean |",
        "|---|" + "---|" * (len(sevs) + 1),
    ]
    for name, row in res["accuracy"].items():
        cells = " | ".join(f"{row[str(s)]:.1%}" for s in sevs)
        lines.append(f"| {name} | {cells} | **{res['per_corruption'][name]:.1%}** |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", help="model file, run folder or bundled name (default: bundled default)")
    parser.add_argument("--test-subset", type=int, help="the first N test images (default: all)")
    parser.add_argument("--tta", type=int, help="test-time augmentation (default: the model's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", help="CIFAR-10 folder or archive (default: $CIFAR_CNN_DATA, cache, download)")
    parser.add_argument("--no-cache", action="store_true", help="recompute everything")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    from cifar_cnn.checkpoint import atomic_write_bytes
    from cifar_cnn.evaluate import corruption_accuracy, evaluation_set, model_fingerprint
    from cifar_cnn.hardware import describe
    from cifar_cnn.predict import load

    clf = load(args.model)
    x, y, name, _ = evaluation_set(clf, data=args.data, subset=args.test_subset)
    load_before = os.getloadavg()
    result = corruption_accuracy(clf, x, y, seed=args.seed, tta=args.tta, cache=not args.no_cache, dataset=name)
    now = dt.datetime.now(dt.UTC)
    hardware = {**describe(clf.device), "cpu": lscpu()}
    report = {
        "model_path": args.model or "bundled default", "model_fingerprint": model_fingerprint(clf),
        "date": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "code": git_revision(), "hardware": hardware,
        "load_before": load_before, "load_after": os.getloadavg(),
        "seconds_per_10k_images": result.seconds * 10_000 / result.n, "result": result.to_dict(),
    }  # fmt: skip
    print(result.format())
    slug = re.sub(r"[^a-z0-9]+", "-", f"{clf.name}-{hardware['cpu']['model_name']}".lower()).strip("-")
    path = args.out / f"robustness-{slug}-{now.strftime('%Y%m%dT%H%M%SZ')}.json"
    atomic_write_bytes(path, json.dumps(report, indent=2).encode())
    atomic_write_bytes(path.with_suffix(".md"), (markdown(report) + "\n").encode())
    print(f"written to {path} and .md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

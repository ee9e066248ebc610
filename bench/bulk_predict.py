"""Bulk prediction: `cifar-cnn predict DIR --recursive --out x.csv` against the model's own batched rate.

    .venv/bin/python bench/bulk_predict.py [--n 20000] [--workdir /tmp/bulk-predict-bench]

Writes N 32x32 files once (CIFAR-10 test images, then training images: even ones PNG, odd ones
JPEG quality 90), in DIR/<class>/<block of 500>/ so the walk recurses. Then, in one run:
  1. the model's own rate: the bundled default model's `Classifier.predict_proba` on preloaded
     uint8 arrays, in batches of the CLI's default size (256);
  2. the end-to-end rate: the CLI in a fresh process, `predict DIR --recursive --out x.csv` (its own
     summary's images/s, and the wall clock including Python start, imports and model load);
  3. the model's rate again (the machine is shared: its load drifts);
  4. where the time goes: `bulk.predict_folder` in this process on one class folder (~2,000 files),
     timing its calls of `predict_proba`.
Ratio = end-to-end images/s / mean of the two model rates (aim: >= 70%). The load of the machine
(load average, and the CPU that other processes used during each phase, from /proc/stat) is
recorded, since other jobs share these cores. Writes bench/results/bulk-predict-<cpu>-<time>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

BATCH = 256


def cifar_images(n: int) -> tuple[np.ndarray, np.ndarray]:
    from cifar_cnn.data import load_cifar10

    data = os.environ.get("CIFAR_CNN_DATA") or (
        "/work/shared/cifar10" if Path("/work/shared/cifar10").is_dir() else None
    )
    (x_train, y_train), (x_test, y_test) = load_cifar10(data, verbose=False)
    x, y = np.concatenate([x_test, x_train])[:n], np.concatenate([y_test, y_train])[:n, 0]
    return x, y


def write_files(root: Path, x: np.ndarray, y: np.ndarray) -> None:
    from cifar_cnn.data import CLASS_NAMES

    marker = root / f".complete-{len(x)}"
    if marker.exists():
        return
    shutil.rmtree(root, ignore_errors=True)
    for i, (image, label) in enumerate(zip(x, y, strict=True)):
        folder = root / CLASS_NAMES[int(label)] / f"{i // 500:03d}"
        folder.mkdir(parents=True, exist_ok=True)
        if i % 2:
            Image.fromarray(image).save(folder / f"{i:05d}.jpg", quality=90)
        else:
            Image.fromarray(image).save(folder / f"{i:05d}.png")
    marker.touch()


def cpu_description() -> dict:
    info = {"model_name": platform.processor() or platform.machine(), "family": None, "model": None}
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        info = {
            "model_name": fields.get("Model name"),
            "family": fields.get("CPU family"),
            "model": fields.get("Model"),
        }
    except (OSError, subprocess.CalledProcessError):
        pass
    info["cores"] = os.cpu_count()
    return info


class Phase:
    """Wall time, and the CPU that this process tree and everything else used meanwhile (in cores)."""

    def __enter__(self) -> Phase:
        self.load_before = os.getloadavg()
        self.busy0, self.ours0, self.t0 = _busy_seconds(), _our_cpu_seconds(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        self.seconds = time.perf_counter() - self.t0
        busy, ours = _busy_seconds() - self.busy0, _our_cpu_seconds() - self.ours0
        self.ours_cores = ours / self.seconds
        self.others_cores = max(0.0, busy - ours) / self.seconds
        self.load_after = os.getloadavg()

    def record(self) -> dict:
        return {"seconds": round(self.seconds, 2), "our_cpu_cores": round(self.ours_cores, 2),
                "other_processes_cpu_cores": round(self.others_cores, 2),
                "loadavg_before": [round(v, 2) for v in self.load_before],
                "loadavg_after": [round(v, 2) for v in self.load_after]}  # fmt: skip


def _busy_seconds() -> float:
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]  # idle + iowait
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _our_cpu_seconds() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)  # waited-for children: the CLI and its workers
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def model_rate(clf, x: np.ndarray) -> tuple[float, dict]:
    clf.predict_proba(x[:BATCH])  # warm up
    with Phase() as phase:
        for i in range(0, len(x), BATCH):
            clf.predict_proba(x[i : i + BATCH])
    return len(x) / phase.seconds, phase.record()


def end_to_end(root: Path, out: Path, workers: int | None) -> tuple[dict, dict]:
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "cifar_cnn.cli", "predict", str(root), "--recursive", "--out", str(out), "--quiet"]
    if workers is not None:
        cmd += ["--workers", str(workers)]
    with Phase() as phase:
        done = subprocess.run(cmd, capture_output=True, text=True)
    peak_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # its largest process (KiB on Linux)
    if done.returncode != 0:
        raise SystemExit(f"predict failed ({done.returncode}): {done.stderr}")
    summary = done.stderr.strip().splitlines()[-1]
    m = re.match(r"([\d,]+) predicted, ([\d,]+) errors? in ([\d.]+) s", summary)
    predicted, errors, seconds = int(m[1].replace(",", "")), int(m[2].replace(",", "")), float(m[3])
    with open(out, encoding="utf-8") as f:
        rows = sum(1 for _ in f) - 1
    result = {"command": " ".join(["cifar-cnn", *cmd[3:]]), "summary": summary, "rows": rows, "predicted": predicted,
              "errors": errors, "predict_seconds": seconds, "images_per_second": (predicted + errors) / seconds,
              "wall_images_per_second": (predicted + errors) / phase.seconds,
              "peak_rss_mib": round(peak_mib)}  # fmt: skip
    return result, phase.record()


def breakdown(clf, folder: Path, out: Path) -> dict:
    """Share of a bulk run spent in the model, and the model's rate inside the run."""
    from cifar_cnn.bulk import predict_folder

    inner, spent = clf.predict_proba, [0.0]

    def timed(images, *args, **kwargs):
        t = time.perf_counter()
        try:
            return inner(images, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    clf.predict_proba = timed
    try:
        summary = predict_folder(clf, [folder], out, recursive=True, overwrite=True)
    finally:
        del clf.predict_proba
    return {"folder": str(folder), "files": summary.predicted + summary.errors, "seconds": round(summary.seconds, 2),
            "images_per_second": round(summary.images_per_second, 1), "model_seconds": round(spent[0], 2),
            "model_share": round(spent[0] / summary.seconds, 3),
            "model_images_per_second_inside": round(summary.predicted / spent[0], 1)}  # fmt: skip


def main() -> None:
    import torch

    import cifar_cnn

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=20_000)
    p.add_argument("--model-n", type=int, default=4_000, help="images for each measure of the model's rate")
    p.add_argument("--workers", type=int, help="--workers for the CLI (default: its own, one per core)")
    p.add_argument("--workdir", default="/tmp/bulk-predict-bench")
    args = p.parse_args()
    work = Path(args.workdir)
    root = work / "images"
    x, y = cifar_images(args.n)
    t = time.perf_counter()
    write_files(root, x, y)
    print(f"{args.n} files in {root} ({time.perf_counter() - t:.0f} s)", flush=True)

    clf = cifar_cnn.load()
    sample = x[: args.model_n]
    before, before_phase = model_rate(clf, sample)
    print(f"model alone: {before:.1f} images/s", flush=True)
    e2e, e2e_phase = end_to_end(root, work / "predictions.csv", args.workers)
    print(f"end to end: {e2e['summary']}", flush=True)
    after, after_phase = model_rate(clf, sample)
    print(f"model alone again: {after:.1f} images/s", flush=True)
    from cifar_cnn.data import CLASS_NAMES

    parts = breakdown(clf, root / CLASS_NAMES[0], work / "breakdown.csv")
    print(f"breakdown: {parts}", flush=True)
    model = (before + after) / 2
    ratio = e2e["images_per_second"] / model
    cpu = cpu_description()
    result = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "files": {
            "n": args.n,
            "size": "32x32",
            "formats": "even-numbered PNG, odd-numbered JPEG q90",
            "source": "CIFAR-10 test images, then training images",
            "layout": "DIR/<class>/<block of 500>/",
        },
        "model": {
            "name": clf.name,
            "tta": clf.tta,
            "input_size": clf.input_size,
            "bf16": clf.bf16,
            "torch_threads": torch.get_num_threads(),
            "batch_size": BATCH,
        },
        "model_images_per_second": {"before": round(before, 1), "after": round(after, 1), "mean": round(model, 1)},
        "end_to_end": e2e,
        "breakdown": parts,
        "ratio": round(ratio, 3),
        "cpu": cpu,
        "phases": {"model_before": before_phase, "end_to_end": e2e_phase, "model_after": after_phase},
        "torch": torch.__version__,
        "python": platform.python_version(),
    }
    slug = re.sub(r"[^a-z0-9]+", "-", (cpu["model_name"] or "cpu").lower()).strip("-")[:24]
    stem = Path(__file__).parent / "results" / f"bulk-predict-{slug}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    stem.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    print(f"written to {stem}.json and .md")


def markdown(r: dict) -> str:
    cpu, e2e, m, ph = r["cpu"], r["end_to_end"], r["model_images_per_second"], r["phases"]
    rows = [
        ("model alone (predict_proba, preloaded arrays), before", f"{m['before']:.1f}", ph["model_before"]),
        (
            "`predict DIR --recursive --out x.csv` (its summary)",
            f"{e2e['images_per_second']:.1f}",
            {**ph["end_to_end"], "seconds": e2e["predict_seconds"]},
        ),
        ("model alone, after", f"{m['after']:.1f}", ph["model_after"]),
    ]
    lines = [
        f"# Bulk prediction: {r['files']['n']:,} files of {r['files']['size']}, {cpu['model_name']} "
        f"(family {cpu['family']}, model {cpu['model']}), {cpu['cores']} cores",
        f"{r['date']}. Model: bundled `{r['model']['name']}` (tta={r['model']['tta']}, bf16={r['model']['bf16']}, "
        f"{r['model']['torch_threads']} torch threads), batches of {r['model']['batch_size']}. Files: "
        f"{r['files']['formats']}, {r['files']['source']}, in {r['files']['layout']}.",
        "",
        "| run | images/s | seconds | CPU used by other processes (cores) | load average (1 min) before -> after |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {name} | {rate} | {p['seconds']} | {p['other_processes_cpu_cores']} | "
              f"{p['loadavg_before'][0]} -> {p['loadavg_after'][0]} |" for name, rate, p in rows]  # fmt: skip
    lines += [
        "",
        f"**End to end / model alone: {r['ratio']:.0%}** (aim: at least 70%). Summary: `{e2e['summary']}`; "
        f"{e2e['rows']:,} rows. Wall clock of the whole command, with Python start, imports and model load: "
        f"{e2e['wall_images_per_second']:.1f} images/s. Peak memory of its largest process: "
        f"{e2e['peak_rss_mib']} MiB.",
        "",
        f"Where the time goes (`bulk.predict_folder` in-process on {r['breakdown']['files']:,} files of one class "
        f"folder): {r['breakdown']['images_per_second']} images/s, {r['breakdown']['model_share']:.1%} of the time "
        f"inside `predict_proba`, which ran at {r['breakdown']['model_images_per_second_inside']} images/s there "
        "(decoding workers share the cores).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()

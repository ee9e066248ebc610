"""How fast a labelled folder of small PNGs becomes training arrays (`datasets.image_folder`).

    .venv/bin/python bench/decode_folder.py [--n 50000] [--workdir /tmp/decode-bench]

Writes N 32x32 PNGs (CIFAR-10 training images, one folder per class) once, then times:
cold (no cache, all cores), cold on one core, and warm (the per-file cache). Writes a markdown
table to bench/results/decode-folder-<cpu>-<date>.md. Target (issue 11): 50,000 in <= 60 s on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image


def write_pngs(root: Path, n: int) -> None:
    from cifar_cnn.data import CLASS_NAMES, load_cifar10

    (x, y), _ = load_cifar10(verbose=False)
    if root.is_dir() and sum(1 for _ in root.rglob("*.png")) == n:
        return
    shutil.rmtree(root, ignore_errors=True)
    for name in CLASS_NAMES:
        (root / name).mkdir(parents=True)
    for i in range(n):
        Image.fromarray(x[i]).save(root / CLASS_NAMES[int(y[i, 0])] / f"{i:05d}.png")


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    from cifar_cnn.datasets import image_folder
    from cifar_cnn.hardware import cpu_model

    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=50_000)
    p.add_argument("--workdir", default="/tmp/decode-bench")
    args = p.parse_args()
    root = Path(args.workdir) / "pngs"
    os.environ["XDG_CACHE_HOME"] = str(Path(args.workdir) / "cache")
    shutil.rmtree(os.environ["XDG_CACHE_HOME"], ignore_errors=True)
    print(f"writing {args.n} PNGs: {timed(lambda: write_pngs(root, args.n)):.1f} s")
    cores = os.cpu_count() or 1
    rows = [
        (f"cold, {cores} processes", timed(lambda: image_folder(root, cache=True, progress=False))),
        ("warm (per-file cache)", timed(lambda: image_folder(root, cache=True, progress=False))),
        ("cold, 1 process", timed(lambda: image_folder(root, cache=False, workers=1, progress=False))),
    ]
    cpu = cpu_model()
    lines = [f"# Folder decoding: {args.n:,} PNGs of 32x32 (CIFAR-10 images), {cpu}, {cores} cores",
             f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC. Scan + decode + checks + split + channel statistics.", "",
             "| run | seconds | images/s |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {name} | {s:.1f} | {args.n / s:,.0f} |" for name, s in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    slug = cpu.lower().replace(" ", "-")[:24]
    out = Path(__file__).parent / "results" / f"decode-folder-{slug}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.md"
    out.write_text(text)
    print(f"written to {out}")


if __name__ == "__main__":
    main()

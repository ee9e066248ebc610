"""Memory and time of decoding hostile-but-legal big images with `cifar_cnn.images.load_image`.

Two 7000 x 7000 PNGs, just under the 50-megapixel limit: a tiny (~100 KB) 16-bit greyscale one and an
RGBA one. For each, `load_image(data, size=32)` and `size=64` run once, eight at once in threads (as the
web server's thread pool does) and eight at once in processes. Every measurement runs in a fresh
Python process; "extra MiB" is its peak RSS (VmHWM, reset just before decoding) minus its RSS before
decoding, with the encoded bytes already in memory. For eight processes it is the sum of the eight.

    .venv/bin/python bench/decode_memory.py                 # the working tree's images.py
    .venv/bin/python bench/decode_memory.py --before HEAD   # also images.py as of a git revision

Writes bench/results/decode-memory-<cpu>-<UTC time>.md (and prints it).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime as dt
import importlib.util
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIDE = 7000
SIZES = (32, 64)
RUNS = (("once", 1), ("8 threads", 8), ("8 processes", 8))


def make_images(folder: Path, side: int) -> dict[str, Path]:
    from PIL import Image

    paths = {"16-bit grey PNG": folder / f"grey16-{side}.png", "RGBA PNG": folder / f"rgba-{side}.png"}
    if not paths["16-bit grey PNG"].exists():
        row = (np.arange(side, dtype=np.uint32) * 65535 // (side - 1)).astype(np.uint16)
        Image.fromarray(np.broadcast_to(row, (side, side)).copy()).save(paths["16-bit grey PNG"])
    if not paths["RGBA PNG"].exists():
        y, x = np.ogrid[:side, :side]
        planes = [
            np.broadcast_to((x * 255 // side).astype(np.uint8), (side, side)),
            np.broadcast_to((y * 255 // side).astype(np.uint8), (side, side)),
            ((x ^ y) & 255).astype(np.uint8),
            ((x // 64 + y // 64) % 2 * 127 + 128).astype(np.uint8),
        ]
        Image.fromarray(np.dstack(planes)).save(paths["RGBA PNG"])
    return paths


def load_module(path: str):
    spec = importlib.util.spec_from_file_location("images_under_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def status_kib(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    return int(re.search(rf"^{field}:\s+(\d+) kB", text, re.M).group(1))


def child(impl: str, image: str, size: int, threads: int) -> None:
    """Measure in this (fresh) process; print one JSON line."""
    module = load_module(impl)
    data = Path(image).read_bytes()
    module.load_image(np.zeros((4, 4, 3), np.uint8), size)  # warm up lazy imports
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = status_kib("VmRSS")
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        shapes = list(pool.map(lambda _: module.load_image(data, size).shape, range(threads)))
    seconds = time.perf_counter() - start
    assert all(s == (size, size, 3) for s in shapes), shapes
    print(json.dumps({"extra_mib": (status_kib("VmHWM") - before) / 1024, "seconds": seconds}))


def measure(impl: str, image: Path, size: int, run: str, n: int) -> dict[str, float]:
    def start(threads: int) -> subprocess.Popen:
        cmd = [sys.executable, __file__, "--child", impl, str(image), str(size), str(threads)]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT)

    procs = [start(n)] if run != "8 processes" else [start(1) for _ in range(n)]
    results = []
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode:
            raise SystemExit(f"measurement failed: {impl} {image.name} size={size} {run}")
        results.append(json.loads(out.strip().splitlines()[-1]))
    return {"extra_mib": sum(r["extra_mib"] for r in results), "seconds": max(r["seconds"] for r in results)}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return re.search(r"^Model name:\s*(.+)$", out, re.M).group(1).strip()
    except (OSError, subprocess.CalledProcessError, AttributeError):
        return "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", metavar="REV", help="also measure src/cifar_cnn/images.py at this git revision")
    parser.add_argument("--side", type=int, default=SIDE, help="image width and height (default 7000)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "cifar-cnn-decode-memory")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        impl, image, size, threads = args.child
        return child(impl, image, int(size), int(threads))

    args.cache.mkdir(parents=True, exist_ok=True)
    images = make_images(args.cache, args.side)
    impls = {"after": str(ROOT / "src" / "cifar_cnn" / "images.py")}
    if args.before:
        old = subprocess.run(
            ["git", "show", f"{args.before}:src/cifar_cnn/images.py"],
            capture_output=True,
            text=True,
            check=True,
            cwd=ROOT,
        ).stdout
        path = args.cache / "images_before.py"
        path.write_text(old)
        impls = {"before": str(path), **impls}
        rev = subprocess.run(["git", "rev-parse", "--short", args.before], capture_output=True, text=True, cwd=ROOT)
        args.before = f"{args.before} = {rev.stdout.strip()}" if rev.returncode == 0 else args.before

    rows = []
    for label, image in images.items():
        for size in SIZES:
            for run, n in RUNS:
                cells = {}
                for name, impl in impls.items():
                    cells[name] = measure(impl, image, size, run, n)
                    print(f"{label} size={size} {run} {name}: {cells[name]}", file=sys.stderr, flush=True)
                rows.append((label, image.stat().st_size, size, run, cells))

    now = dt.datetime.now(dt.UTC)
    cpu = cpu_model()
    names = list(impls)
    lines = [
        f"Decode memory {now:%Y-%m-%dT%H:%M:%SZ} on {cpu} ({os.cpu_count()} CPUs), "
        f"{args.side}x{args.side} images, `load_image(data, size)`; "
        + (f"before = images.py at `{args.before}`, after = the working tree." if args.before else ""),
        "",
        "Extra MiB: peak RSS minus RSS before decoding (summed over processes for 8 processes). "
        "Seconds: wall time of the decodes (the slowest process for 8 processes).",
        "",
        "| image | file KiB | size | run | " + " | ".join(f"{n} extra MiB | {n} s" for n in names) + " |",
        "|---|---|---|---|" + "---|---|" * len(names),
    ]
    for label, nbytes, size, run, cells in rows:
        values = " | ".join(f"{cells[n]['extra_mib']:.0f} | {cells[n]['seconds']:.2f}" for n in names)
        lines.append(f"| {label} | {nbytes / 1024:.0f} | {size} | {run} | {values} |")
    text = "\n".join(lines) + "\n"
    slug = re.sub(r"[^a-z0-9]+", "-", cpu.lower()).strip("-")
    args.out.mkdir(parents=True, exist_ok=True)
    out = args.out / f"decode-memory-{slug}-{now:%Y%m%dT%H%M%SZ}.md"
    out.write_text(text)
    print(text)
    print(f"wrote {out}", file=sys.stderr)


if __name__ == "__main__":
    main()

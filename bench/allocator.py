"""Seconds per training step of `fast` with glibc's allocator as it comes against freed memory
kept for the next step (`hardware.keep_freed_memory`, what `train` does on a CPU), each in its own
process, alternating, with the kernel time and page faults of the steps.

    .venv/bin/python bench/allocator.py            # writes bench/results/alloc-<cpu>-<date>.md

Each process runs the trainer's own `train_step` (forward, loss, backward, Muon + SGD step) on
random images at the recipe's batch, one warm-up step, then `--steps` timed steps.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np


def measure(steps: int, size: int) -> dict:
    import torch
    from step_time import random_run

    from cifar_cnn.hardware import keep_freed_memory
    from cifar_cnn.preprocess import batch_resize
    from cifar_cnn.train import train_step

    run, x, y = random_run()
    x = batch_resize(x, size)
    with keep_freed_memory(torch.device("cpu")) as policy:
        train_step(run, x, y)
        r0, times = resource.getrusage(resource.RUSAGE_SELF), []
        for _ in range(steps):
            t = time.perf_counter()
            train_step(run, x, y)
            times.append(time.perf_counter() - t)
        r1 = resource.getrusage(resource.RUSAGE_SELF)
    return {"policy": policy, "size": size, "times": times, "user": r1.ru_utime - r0.ru_utime,
            "sys": r1.ru_stime - r0.ru_stime, "faults": r1.ru_minflt - r0.ru_minflt,
            "peak_rss_mib": r1.ru_maxrss / 1024}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--sizes", default="32,24")
    parser.add_argument("--out", default="bench/results")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).parent))
    if args.child:
        print(json.dumps([measure(args.steps, int(s)) for s in args.sizes.split(",")]))
        return
    from step_time import cpu_line, write_result

    rows = []
    for rnd in range(args.rounds):
        for policy in ("system", "keep"):
            env = {**os.environ, "CIFAR_CNN_ALLOCATOR": policy}
            out = subprocess.run([sys.executable, __file__, "--child", "--steps", str(args.steps), "--sizes",
                                  args.sizes], env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
            for r in json.loads(out.strip().splitlines()[-1]):
                rows.append({**r, "round": rnd + 1})
                print(rows[-1], flush=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = [f"Training step of `fast` (batch 2000) by allocator policy on {cpu_line()}, {stamp} "
             f"(`bench/allocator.py`): {args.steps} timed steps per process after one warm-up; "
             "system = glibc as it comes, keep = `hardware.keep_freed_memory` (what `train` does on a CPU).", "",
             "| round | input px | allocator | median s/step | steps (s) | user s | sys s | minor page faults | "
             "peak RSS MiB |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        lines.append(f"| {r['round']} | {r['size']} | {r['policy']} | {np.median(r['times']):.2f} | "
                     + " ".join(f"{t:.2f}" for t in r["times"])
                     + f" | {r['user']:.1f} | {r['sys']:.1f} | {r['faults']:,} | {r['peak_rss_mib']:,.0f} |")  # fmt: skip
    for size in sorted({r["size"] for r in rows}, reverse=True):
        med = {p: np.median([np.median(r["times"]) for r in rows if r["policy"] == p and r["size"] == size])
               for p in ("system", "keep")}  # fmt: skip
        lines.append(f"\n{size} px: keep / system = {med['keep']:.2f} / {med['system']:.2f} s = "
                     f"**{med['keep'] / med['system']:.2f}x** (medians over rounds)")
    write_result(lines, args.out, "alloc", stamp)


if __name__ == "__main__":
    main()

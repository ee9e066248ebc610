"""Memory format per layer on a CPU: is channels_last best for every convolution of `fast`?

    .venv/bin/python bench/memory_formats.py     # writes bench/results/memory-formats-<cpu>-<date>.md

Part 1 times each 3x3 convolution of `fast` alone (batch 500, oneDNN; forward, input gradient,
weight gradient) in channels_last and in contiguous (NCHW) memory. Part 2 times whole training
steps (the trainer's own `train_step`, batch 2000, frozen whitening bias, freed memory kept as in
training) with every tensor channels_last (what `train` does), and with the small-map layers
switched to contiguous: group 3 (7 px and 3 px maps), or from group 2's second convolution on.
Variants alternate over `--rounds` rounds; medians.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_time import cpu_line, write_result

LAYERS = [("group 1 conv 1", 24, 64, 31), ("group 1 conv 2", 64, 64, 15), ("group 2 conv 1", 64, 256, 15),
          ("group 2 conv 2", 256, 256, 7), ("group 3 conv 1", 256, 256, 7), ("group 3 conv 2", 256, 256, 3)]  # fmt: skip
FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def best_seconds(fn, reps: int = 3) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def layer_times(batch: int) -> list[str]:
    lines = [f"Each convolution alone, batch {batch}, best of 3 (ms: forward / input gradient / weight gradient):",
             "", "| layer | channels_last | contiguous |", "|---|---|---|"]  # fmt: skip
    backward = torch.ops.aten.convolution_backward
    for name, cin, cout, side in LAYERS:
        cells = []
        for fmt in FORMATS.values():
            x = torch.randn(batch, cin, side, side).to(memory_format=fmt)
            w = torch.randn(cout, cin, 3, 3).to(memory_format=fmt)
            g = F.conv2d(x, w, padding=1)
            args = (None, [1, 1], [1, 1], [1, 1], False, [0, 0], 1)
            ms = [1e3 * best_seconds(fn) for fn in (
                partial(F.conv2d, x, w, padding=1),
                partial(backward, g, x, w, *args, [True, False, False]),
                partial(backward, g, x, w, *args, [False, True, False]),
            )]  # fmt: skip
            cells.append(" / ".join(f"{v:.0f}" for v in ms))
        lines.append(f"| {name} ({cin}->{cout}, {side} px) | {cells[0]} | {cells[1]} |")
        print(lines[-1], flush=True)
    return lines


def step_times(rounds: int) -> list[str]:
    from step_time import random_run

    from cifar_cnn.hardware import keep_freed_memory
    from cifar_cnn.models.airbench import ConvGroup
    from cifar_cnn.train import train_step

    def forward(self, x):  # ConvGroup.forward with optional switches to contiguous memory
        if getattr(self, "contiguous_in", False):
            x = x.contiguous()
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        if getattr(self, "contiguous_mid", False):
            x = x.contiguous()
        return self.activ(self.norm2(self.conv2(x)))

    original = ConvGroup.forward
    ConvGroup.forward = forward
    variants = ["all channels_last (train's)", "group 3 contiguous", "from group 2 conv 2 contiguous"]
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    try:
        with keep_freed_memory(torch.device("cpu")):
            for _ in range(rounds):
                for i, variant in enumerate(variants):
                    run, x, y = random_run()  # whitening bias frozen, as in epochs 4 to 8
                    group2, group3 = run.model.layers[2], run.model.layers[3]
                    if i >= 1:
                        group3.contiguous_in = True
                        for p in group3.parameters():
                            p.data = p.data.contiguous()
                    if i == 2:
                        group2.contiguous_mid = True
                        group2.conv2.weight.data = group2.conv2.weight.data.contiguous()
                    train_step(run, x, y)  # picks oneDNN's kernels
                    for _ in range(3):
                        t = time.perf_counter()
                        train_step(run, x, y)
                        seconds[variant].append(time.perf_counter() - t)
                    print(variant, [round(s, 2) for s in seconds[variant]], flush=True)
                    del run
    finally:
        ConvGroup.forward = original
    base = statistics.median(seconds[variants[0]])
    lines = [f"Whole training steps of `fast` (batch {len(x)}), median of {3 * rounds}:", "",
             "| memory format | s/step | vs channels_last |", "|---|---|---|"]  # fmt: skip
    for variant in variants:
        median = statistics.median(seconds[variant])
        lines.append(f"| {variant} | {median:.2f} | {median / base:.2f}x |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = [f"Memory formats on {cpu_line()}, torch {torch.__version__}, {stamp} (`bench/memory_formats.py`)", ""]
    lines += [*layer_times(args.batch), "", *step_times(args.rounds)]
    write_result(lines, args.out, "memory-formats", stamp)


if __name__ == "__main__":
    main()

"""Seconds per training step of `fast` at the recipe's batch, per variant: where a faster recipe
can find its time on this machine. Each variant runs through the trainer's own `train_step`
(forward, loss, backward, Muon + SGD step) on random images, best of `--steps` after a warm-up.

    .venv/bin/python bench/step_time.py            # writes bench/results/steps-<cpu>-<date>.md

Variants: the training resolution (progressive resizing trains early epochs smaller), the
whitening bias trained or frozen (frozen: its gradient and the first group's input gradient are
skipped), and GELU against ReLU. FLOPs per step are counted by torch's FlopCounter.
"""

from __future__ import annotations

import argparse
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

VARIANTS = [  # (size, whiten bias trained, activation)
    (32, True, "gelu"), (32, False, "gelu"), (28, False, "gelu"), (24, False, "gelu"), (20, False, "gelu"),
    (16, False, "gelu"), (32, False, "relu"), (24, False, "relu"),
]  # fmt: skip


def cpu_line() -> str:
    from cifar_cnn.hardware import cpu_model

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    family = re.search(r"cpu family\s*:\s*(\d+)", info)
    model = re.search(r"^model\s*:\s*(\d+)", info, re.M)
    flags = re.search(r"^flags\s*:(.*)$", info, re.M)
    extra = [f for f in ("avx512_bf16", "amx_bf16", "avx512f") if flags and f" {f}" in flags.group(1)]
    return (f"{cpu_model()} (family {family.group(1) if family else '?'} model {model.group(1) if model else '?'}"
            f"{', ' + ', '.join(extra) if extra else ', no AVX-512'}), {torch.get_num_threads()} threads")  # fmt: skip


def write_result(lines: list[str], out: str, prefix: str, stamp: str) -> Path:
    """Print the markdown lines and write them to OUT/<prefix>-<cpu>-<stamp>.md."""
    cpu = re.sub(r"[^a-z0-9]+", "-", cpu_line().split(" (")[0].lower()).strip("-")
    path = Path(out) / f"{prefix}-{cpu}-{stamp}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    print("\n".join(lines), f"\nwritten to {path}", sep="\n")
    return path


def random_run(whiten_trained: bool = False):
    """A `fast` training run (the trainer's own `prepare`) on random images, at the step where
    the whitening bias is still trained or already frozen, and its first batch: (run, x, y)."""
    from cifar_cnn.recipes import get_recipe
    from cifar_cnn.train import prepare

    recipe = get_recipe("fast")
    rng = np.random.default_rng(0)
    n = recipe.batch_size + recipe.batch_size // 9 + 1
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (n, 1)).astype(np.uint8)
    run = prepare(recipe, data=((images, labels), (images[:10], labels[:10])), progress=False, tensorboard=False,
                  epochs=100)  # fmt: skip
    run.state["step"] = 0 if whiten_trained else run.opts.whiten_steps
    x, y = next(run.batches.epoch(0, run.generator))
    return run, x, y


def main() -> None:
    from cifar_cnn.bench import step_flops
    from cifar_cnn.preprocess import batch_resize
    from cifar_cnn.recipes import get_recipe
    from cifar_cnn.train import train_step

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--out", default="bench/results")
    args = parser.parse_args()
    recipe = get_recipe("fast")
    rows = []
    for size, whiten_trained, activation in VARIANTS:
        run, x, y = random_run(whiten_trained)
        if activation == "relu":
            for module in run.model.modules():
                for name, child in list(module.named_children()):
                    if isinstance(child, nn.GELU):
                        setattr(module, name, nn.ReLU())
        x = batch_resize(x, size)
        times = []
        for _ in range(args.steps + 1):  # the first call picks oneDNN's kernels
            t = time.perf_counter()
            train_step(run, x, y)
            times.append(time.perf_counter() - t)
        flops = step_flops(recipe, 8, size)[0] * len(x) / 8
        rows.append((size, whiten_trained, activation, min(times[1:]), flops))
        print(rows[-1], flush=True)
    base = rows[0][3]
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    lines = [f"Training step of `fast` (batch {len(x)}, fp32 unless bf16 is native) on {cpu_line()}, "
             f"torch {torch.__version__}, {stamp}; best of {args.steps} after a warm-up "
             "(`bench/step_time.py`)", "",
             "| input px | whitening bias | activation | s/step | vs 32 px as airbench trains it | GFLOPs/step | vs its FLOPs |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for size, trained, act, secs, flops in rows:
        lines.append(f"| {size} | {'trained' if trained else 'frozen'} | {act} | {secs:.2f} | {secs / base:.2f}x | "
                     f"{flops / 1e9:.0f} | {flops / rows[0][4]:.2f}x |")  # fmt: skip
    write_result(lines, args.out, "steps", stamp)


if __name__ == "__main__":
    main()

"""Store a model file's weights in fp16 or bf16, and measure what that costs in accuracy.

    .venv/bin/python bench/half_weights.py src/cifar_cnn/pretrained/fast.safetensors --dtype float16 \\
        --out /tmp/fast-fp16.safetensors

Only the convolution and linear weights are halved (tensors of 2 or more dimensions): BatchNorm
statistics stay fp32 (its eps is 1e-12 and some running variances are too small for fp16), and
so do the novelty detector's `ood.*` statistics (inverted covariances lose too much in 16 bits).
Loading needs nothing new: `load_state_dict` copies the halved tensors into the model's fp32
parameters. Both files are loaded the way users load them and evaluated on the CIFAR-10 test set
with the model's test-time augmentation: accuracy, agreement of the predicted labels, the
"none of these" flag rate, and the file sizes. Writes bench/results/half-weights-<cpu>-<date>.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch


def halve(src: Path, dst: Path, dtype: torch.dtype) -> None:
    from cifar_cnn.checkpoint import load_tensors, save_tensors
    from cifar_cnn.novelty import PREFIX

    tensors, meta = load_tensors(src)
    halved = {k: v.to(dtype) if v.is_floating_point() and v.ndim >= 2 and not k.startswith(PREFIX) else v
              for k, v in tensors.items()}  # fmt: skip
    save_tensors(dst, {k: v.contiguous() for k, v in halved.items()}, meta)


def measure(path: Path, x: np.ndarray, y: np.ndarray) -> dict:
    import cifar_cnn

    clf = cifar_cnn.load(path)
    probs, novelty = clf.scores(x)
    predictions = clf.to_predictions(probs, 1, novelty)
    return {"file": str(path), "bytes": os.path.getsize(path), "labels": probs.argmax(1),
            "accuracy": float((probs.argmax(1) == y).mean()),
            "none_of_these": float(np.mean([p.reason is not None and p.reason.startswith("looks like") for p in predictions])),
            "uncertain": float(np.mean([p.uncertain for p in predictions]))}  # fmt: skip


def main() -> None:
    from cifar_cnn.data import load_cifar10
    from cifar_cnn.hardware import cpu_model

    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--dtype", choices=["float16", "bfloat16"], default="float16")
    p.add_argument("--out", required=True, help="the halved model file to write")
    p.add_argument("--results", default=str(Path(__file__).parent / "results"))
    args = p.parse_args()
    halve(Path(args.model), Path(args.out), getattr(torch, args.dtype))
    _, (x, y) = load_cifar10(verbose=False)
    y = y.ravel()
    full, half = measure(Path(args.model), x, y), measure(Path(args.out), x, y)
    agree = float((full.pop("labels") == half.pop("labels")).mean())
    cpu = cpu_model()
    result = {"cpu": cpu, "torch_threads": torch.get_num_threads(), "dtype": args.dtype, "original": full,
              "halved": half, "label_agreement": agree}  # fmt: skip
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    out = Path(args.results) / f"half-weights-{cpu.lower().replace(' ', '-')[:24]}-{stamp}"
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    lines = [f"# Weights in {args.dtype}: {Path(args.model).name} ({cpu}, {torch.get_num_threads()} threads)", "",
             "CIFAR-10 test set (10,000), the model's test-time augmentation; conv and linear weights halved, "
             "BatchNorm and novelty statistics fp32.", "",
             "| file | size | accuracy | flagged none-of-these | flagged uncertain |", "|---|---|---|---|---|"]  # fmt: skip
    for name, r in (("original", full), (args.dtype, half)):
        lines.append(f"| {name} | {r['bytes'] / 2**20:.2f} MiB | {r['accuracy']:.2%} | {r['none_of_these']:.2%} | "
                     f"{r['uncertain']:.2%} |")  # fmt: skip
    lines += ["", f"Predicted labels agree on {agree:.2%} of the test images."]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

"""`cifar-cnn bench --inference`: every CPU inference path for one model, side by side.

Each path takes the same uint8 images (N, S, S, 3) and returns class probabilities, preprocessing
and calibrated softmax included, so the numbers are what a caller of that path gets:

    pytorch_fp32        `Classifier.predict_proba` in eager PyTorch, fp32 (the default on CPUs
                        without native bf16)
    pytorch_bf16        the same under bf16 autocast (only on CPUs with native bf16: elsewhere it
                        is emulated and slower)
    torchscript_frozen  the exported TorchScript graph, frozen and `optimize_for_inference`d:
                        oneDNN folds BatchNorm into the convolutions and fuses activations
    onnxruntime_fp32    the exported ONNX graph in ONNX Runtime's CPU provider
    onnxruntime_int8    that graph statically quantized (QDQ, per-channel int8 weights, uint8
                        activations), `export.export_onnx_int8`: what `cifar-cnn export
                        --format onnx-int8` writes, calibrated on training images

Per path: batched images/s, one-image latency (median of `latency_calls` calls, no test-time
augmentation), and, where CIFAR-10 and the model's classes allow, top-1 accuracy on the first
test images and agreement with `pytorch_fp32`. The speed of a path means nothing if it answers
differently, hence the last two columns.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from cifar_cnn.errors import CifarCnnError
from cifar_cnn.hardware import describe, use_bf16

InferenceFn = Callable[[np.ndarray], np.ndarray]  # uint8 images -> probabilities


def _paths(clf, workdir: Path, calibration: np.ndarray) -> dict[str, InferenceFn | str]:
    """Each inference path as a function, or a string saying why it is not available here."""
    from cifar_cnn.export import export_onnx, export_onnx_int8, export_torchscript

    paths: dict[str, InferenceFn | str] = {"pytorch_fp32": lambda x: clf.predict_proba(x, tta=0, bf16=False)}
    if use_bf16(torch.device("cpu")):
        paths["pytorch_bf16"] = lambda x: clf.predict_proba(x, tta=0, bf16=True)
    else:
        paths["pytorch_bf16"] = "no native bf16 on this CPU (emulated bf16 is slower than fp32)"
    try:
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.load(
            str(export_torchscript(clf, workdir / "model.pt"))).eval()))  # fmt: skip

        def run_frozen(x: np.ndarray) -> np.ndarray:
            with torch.no_grad():
                return frozen(torch.from_numpy(np.ascontiguousarray(x)))[0].numpy()

        paths["torchscript_frozen"] = run_frozen
    except Exception as exc:  # a model TorchScript cannot trace: say so, measure the rest
        paths["torchscript_frozen"] = f"not available: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    try:
        import onnxruntime as ort
    except ImportError:
        paths["onnxruntime_fp32"] = paths["onnxruntime_int8"] = (
            "onnxruntime not installed (pip install 'cifar-cnn[export]')"
        )
        return paths
    for name, make in (("onnxruntime_fp32", lambda: export_onnx(clf, workdir / "model.onnx")),
                       ("onnxruntime_int8", lambda: export_onnx_int8(clf, workdir / "model.int8.onnx", calibration))):  # fmt: skip
        try:
            session = ort.InferenceSession(str(make()), providers=["CPUExecutionProvider"])
        except CifarCnnError as exc:  # a model the exporter cannot take: say so, measure the rest
            paths[name] = f"not available: {exc}"
            continue
        paths[name] = lambda x, s=session: s.run(None, {"images": np.ascontiguousarray(x)})[0]
    return paths


def _images_per_second(fn: InferenceFn, images: np.ndarray, repeats: int) -> float:
    fn(images)  # warm-up: allocations, oneDNN primitive creation
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn(images)
        best = min(best, time.perf_counter() - t)
    return len(images) / best


def _latency_ms(fn: InferenceFn, image: np.ndarray, calls: int) -> float:
    for _ in range(5):
        fn(image)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        fn(image)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def _cifar10_test(clf, n_test: int) -> tuple[np.ndarray, np.ndarray] | None:
    """(test images, labels) when the model has CIFAR-10's classes and the data is found, else None."""
    from cifar_cnn.datasets import cifar10

    try:
        ds = cifar10(holdout=0, test_subset=n_test, verbose=False)
    except (CifarCnnError, OSError):
        return None
    if list(ds.classes) != list(clf.card.classes) or clf.input_size != ds.test_x.shape[1]:
        return None
    return ds.test_x, np.asarray(ds.test_y).ravel()


def inference_backends(model_path: str | None = None, batch: int = 1000, repeats: int = 3, latency_calls: int = 100,
                       test_images: int = 2000, calibration_images: int = 500) -> dict:  # fmt: skip
    """Measure every inference path of `model_path` (default: the bundled default model)."""
    from cifar_cnn.export import calibration_images as training_images  # the parameter has its name
    from cifar_cnn.predict import load

    clf = load(model_path)
    rng = np.random.default_rng(0)
    s = clf.input_size
    data = _cifar10_test(clf, test_images)
    try:  # what `cifar-cnn export --format onnx-int8` calibrates on
        calibration, calibrated_on = training_images(clf, n=calibration_images), "CIFAR-10 training images"
    except CifarCnnError:
        calibration = rng.integers(0, 256, (calibration_images, s, s, 3), dtype=np.uint8)
        calibrated_on = "random images (no CIFAR-10 for this model)"
    images = data[0][:batch] if data and len(data[0]) >= batch else rng.integers(0, 256, (batch, s, s, 3), np.uint8)
    result: dict = {"date": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), "model": clf.name,
                    "model_path": str(model_path or "bundled default"), "batch": batch, "latency_calls": latency_calls,
                    "hardware": describe(torch.device("cpu")),
                    "calibration": f"{len(calibration)} {calibrated_on}", "test_images": len(data[0]) if data else 0,
                    "paths": {}}  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        paths = _paths(clf, Path(tmp), calibration)
        reference = clf.predict_proba(data[0] if data else images, tta=0, bf16=False)
        for name, fn in paths.items():
            if isinstance(fn, str):
                result["paths"][name] = {"skipped": fn}
                continue
            row = {"images_per_second": _images_per_second(fn, images, repeats),
                   "latency_ms": _latency_ms(fn, images[:1], latency_calls)}  # fmt: skip
            probs = fn(data[0] if data else images)
            row["agreement"] = float((probs.argmax(1) == reference.argmax(1)).mean())
            row["max_abs_diff"] = float(np.abs(probs - reference).max())
            if data:
                row["accuracy"] = float((probs.argmax(1) == data[1]).mean())
            result["paths"][name] = row
    return result


def markdown(r: dict) -> str:
    hw = r["hardware"]
    lines = [f"# Inference paths: {r['model']} ({hw['cpu']}, {hw['torch_threads']} threads, torch {hw['torch']})", "",
             f"{r['date']}. Batched: best of 3 passes over {r['batch']} images; latency: median of "
             f"{r['latency_calls']} one-image calls; no test-time augmentation; preprocessing and softmax "
             f"included in every path. Accuracy and agreement with pytorch_fp32 on "
             f"{r['test_images'] or 'random'} {'CIFAR-10 test images' if r['test_images'] else 'images'}; "
             f"int8 calibrated on {r['calibration']}.", "",
             "| path | images/s | latency ms | accuracy | agreement | max abs diff |", "|---|---|---|---|---|---|"]  # fmt: skip
    for name, row in r["paths"].items():
        if "skipped" in row:
            lines.append(f"| {name} | skipped: {row['skipped']} | | | | |")
            continue
        acc = f"{row['accuracy']:.2%}" if "accuracy" in row else "n/a"
        lines.append(f"| {name} | {row['images_per_second']:,.0f} | {row['latency_ms']:.2f} | {acc} | "
                     f"{row['agreement']:.2%} | {row['max_abs_diff']:.4f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def write(result: dict, out_dir: str | Path) -> Path:
    """bench/results-style files: inference-<model>-<cpu>-<date>.{json,md}; returns the .md path."""
    from cifar_cnn.checkpoint import atomic_write_bytes

    cpu = re.sub(r"[^a-z0-9]+", "-", result["hardware"]["cpu"].lower()).strip("-")
    stamp = result["date"].replace(":", "").replace("-", "")
    path = Path(out_dir) / f"inference-{result['model']}-{cpu}-{stamp}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(result, indent=2).encode())
    atomic_write_bytes(path, markdown(result).encode())
    return path

"""`cifar-cnn export MODEL --format onnx|onnx-int8|torchscript`: portable models with the
preprocessing folded in.

The exported graph takes what an application has at hand, uint8 RGB images (N, S, S, 3) at the
model's input size S (32 or 64...: resize the shorter side to S, then center-crop, as
`images.to_model_size` does), and returns calibrated class probabilities (N, classes) and
logits. Class names, input size, mean/std, temperature and layout are stored in the file's
metadata (ONNX `metadata_props`, TorchScript extra file `metadata.json`), all taken from the
model's `ModelCard`. The batch dimension is dynamic.

Models trained from your own `nn.Module` (stored as a torch.export program) export too.

`onnx-int8` is the ONNX graph statically quantized by ONNX Runtime (int8 weights per channel,
uint8 activations, calibrated on a few hundred training images): on a 2-core Zen 3 CPU it ran
1.6x to 1.9x the images/s of fp32 PyTorch at the same accuracy (README "Inference paths").
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import numpy as np
import torch
from torch import nn

from cifar_cnn.card import CUSTOM_MODEL
from cifar_cnn.errors import CifarCnnError
from cifar_cnn.predict import Classifier

FORMATS = ("onnx", "onnx-int8", "torchscript")


class Exportable(nn.Module):
    """uint8 (N, S, S, 3) -> (probabilities, logits), with normalization and temperature inside.

    The normalization is the one formula of `preprocess.to_tensor`, with the card's mean/std:
        x = (pixel / 255 - mean) / std        (per RGB channel, NHWC uint8 -> NCHW float)
    then probabilities = softmax(model(x) / temperature).
    """

    def __init__(self, clf: Classifier):
        super().__init__()
        card = clf.card
        self.input_size = card.input_size
        self.model = copy.deepcopy(clf.model).float().cpu().eval()
        self.register_buffer("mean", torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1))
        self.temperature = float(card.temperature)
        self.eval()

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float().div(255)
        logits = self.model((x - self.mean) / self.std)
        return torch.softmax(logits / self.temperature, dim=1), logits

    def example(self, n: int = 2) -> torch.Tensor:
        return torch.zeros(n, self.input_size, self.input_size, 3, dtype=torch.uint8)


def exported_program_bytes(model: nn.Module, input_size: int) -> torch.Tensor:
    """A module as a serialized torch.export program (uint8 tensor), for model files that must
    load without the code that defined the module. Inputs: float (N, 3, S, S), N dynamic.

    Raises:
        CifarCnnError: the module cannot be exported (data-dependent Python control flow...).
    """
    module = copy.deepcopy(model).float().cpu().eval()
    example = torch.zeros(2, 3, input_size, input_size).contiguous(memory_format=torch.channels_last)
    batch = torch.export.Dim("batch", min=1, max=65536)
    try:
        program = torch.export.export(module, (example,), dynamic_shapes=({0: batch},))
    except Exception as exc:  # torch.export raises many types (UserError, Unsupported, RuntimeError...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CifarCnnError(f"your module could not be exported with torch.export ({first}); make its forward "
                            "free of data-dependent Python control flow, or save it yourself with torch.save") from exc  # fmt: skip
    buf = io.BytesIO()
    torch.export.save(program, buf)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def input_description(clf: Classifier) -> str:
    s = clf.input_size
    return f"images: uint8 (N, {s}, {s}, 3) RGB; resize the shorter side to {s} and center-crop to {s}x{s} first"


def export_metadata(clf: Classifier) -> dict[str, str]:
    """String key/values stored in the exported file, all from the model's card."""
    card = clf.card
    return {
        "model": card.model,  # the architecture
        "name": card.name,
        "classes": json.dumps(card.classes, ensure_ascii=False),
        "num_classes": str(card.num_classes),
        "input_size": str(card.input_size),  # the square side S of the uint8 (N, S, S, 3) input
        "input_shape": json.dumps(["N", card.input_size, card.input_size, 3]),
        "resize": card.resize,
        "normalization": "x = (pixel / 255 - mean) / std per RGB channel",
        "mean": json.dumps(list(card.mean)),
        "std": json.dumps(list(card.std)),
        "temperature": str(card.temperature),
        "uncertain_threshold": str(card.uncertain_threshold),
        "input": input_description(clf),
        "outputs": "probabilities (N, classes) calibrated; logits (N, classes)",
        "test_accuracy": str(card.accuracy),
    }


def export_onnx(clf: Classifier, path: str | Path, opset: int = 18) -> Path:
    import onnx

    path = Path(path)
    module = Exportable(clf)
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        torch.onnx.export(
            module, (module.example(),), str(path), input_names=["images"], output_names=["probabilities", "logits"],
            dynamic_shapes={"images": {0: batch}}, opset_version=opset, dynamo=True, external_data=False,
            verbose=False,
        )  # fmt: skip
    except Exception as exc:  # the dynamo exporter raises its own error types
        raise _export_error("ONNX", clf, exc) from exc
    proto = onnx.load(str(path))
    for key, value in export_metadata(clf).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def export_onnx_int8(clf: Classifier, path: str | Path, calibration: np.ndarray) -> Path:
    """The ONNX graph quantized statically: BatchNorm folded into the convolutions first, then
    convolutions and matrix products in int8 (per-channel weights, uint8 activations ranged on
    `calibration`, uint8 images (N, S, S, 3) like the training images), all but the first
    convolution: airbench's whitening stem (PCA filters scaled by 1/sqrt of their eigenvalues)
    spreads its outputs over more than 8 bits hold (quantized, the model fell to 43% on CIFAR-10;
    kept in float, it keeps its accuracy)."""
    import logging
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    s = clf.input_size
    calibration = np.asarray(calibration)
    if calibration.ndim != 4 or calibration.shape[1:] != (s, s, 3) or calibration.dtype != np.uint8 or \
            not len(calibration):  # fmt: skip
        raise CifarCnnError(f"int8 calibration needs uint8 images (N, {s}, {s}, 3); got {calibration.dtype} "
                            f"{calibration.shape}")  # fmt: skip

    class Calibration(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{"images": calibration[i : i + 100]} for i in range(0, len(calibration), 100)])

        def get_next(self) -> dict | None:
            return next(self.batches, None)

    path = Path(path)
    root = logging.getLogger()
    level = root.level
    with tempfile.TemporaryDirectory() as tmp:
        fp32, prepared = export_onnx(clf, Path(tmp) / "fp32.onnx"), Path(tmp) / "prepared.onnx"
        root.setLevel(logging.ERROR)  # the quantizer's advice goes to the root logger
        try:
            quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
            convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
            quantize_static(str(prepared), str(path), Calibration(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            op_types_to_quantize=["Conv", "MatMul", "Gemm"], nodes_to_exclude=convs[:1])  # fmt: skip
        except Exception as exc:
            raise _export_error("ONNX int8", clf, exc) from exc
        finally:
            root.setLevel(level)
    proto = onnx.load(str(path))
    have = {p.key for p in proto.metadata_props}
    for key, value in {**export_metadata(clf), "quantization": f"int8 static QDQ, {len(calibration)} calibration "
                       "images, first convolution in float"}.items():  # fmt: skip
        if key not in have:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def calibration_images(clf: Classifier, folder: str | Path | None = None, n: int = 500, seed: int = 0) -> np.ndarray:
    """`n` random training images at the model's input size to range int8 activations on: from
    `folder` (a labelled folder like the one the model was trained on), else from CIFAR-10 when
    the model has its classes. Raises CifarCnnError (DataError) when there are none."""
    from cifar_cnn.datasets import cifar10, image_folder

    if folder is not None:
        images = image_folder(folder, image_size=clf.input_size, val_fraction=0, progress=False).train_x
    else:
        try:
            ds = cifar10(holdout=0, verbose=False)
        except CifarCnnError as exc:
            raise CifarCnnError(f"int8 export needs calibration images: {exc} (or give --calibration FOLDER)") from exc
        if list(ds.classes) != list(clf.classes) or ds.train_x.shape[1] != clf.input_size:
            raise CifarCnnError(f"int8 export of {clf.name} needs calibration images like its training images: "
                                "--calibration FOLDER (your training folder, a few hundred images are enough)")  # fmt: skip
        images = ds.train_x
    return images[np.sort(np.random.default_rng(seed).permutation(len(images))[:n])]


def export_torchscript(clf: Classifier, path: str | Path) -> Path:
    path = Path(path)
    module = Exportable(clf)
    try:
        with torch.no_grad():
            traced = torch.jit.trace(module, module.example())
    except Exception as exc:
        raise _export_error("TorchScript", clf, exc) from exc
    extra = {"metadata.json": json.dumps(export_metadata(clf), ensure_ascii=False)}
    torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def _export_error(fmt: str, clf: Classifier, exc: Exception) -> CifarCnnError:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    hint = " (a model from your own module: try the other format)" if clf.name == CUSTOM_MODEL else ""
    return CifarCnnError(f"could not export {clf.name} to {fmt}: {first}{hint}")


def default_path(clf: Classifier, model_arg: str | None, fmt: str = "onnx") -> Path:
    """Where `cifar-cnn export` writes without --out: beside the model file (model.onnx in a run
    folder), or <model name>.onnx in the current folder for a bundled model."""
    suffix = {"onnx": ".onnx", "onnx-int8": ".int8.onnx"}.get(fmt, ".pt")
    if model_arg and Path(model_arg).exists():
        model = Path(model_arg)
        return (model / "model" if model.is_dir() else model).with_suffix(suffix)
    return Path(f"{clf.name}{suffix}")


def export(clf: Classifier, path: str | Path, fmt: str = "onnx", calibration: np.ndarray | None = None) -> Path:
    """Write `clf` as `fmt` ("onnx", "onnx-int8" with `calibration` images, or "torchscript") to
    `path`. Raises ValueError for an unknown format, CifarCnnError when the model cannot be
    exported."""
    if fmt == "onnx":
        return export_onnx(clf, path)
    if fmt == "onnx-int8":
        if calibration is None:
            raise CifarCnnError("int8 export needs calibration images (a few hundred training images)")
        return export_onnx_int8(clf, path, calibration)
    if fmt == "torchscript":
        return export_torchscript(clf, path)
    raise ValueError(f"unknown export format {fmt!r}: use {', '.join(FORMATS)}")


def export_summary(clf: Classifier, path: str | Path) -> str:
    """The line the CLI prints after an export, built from the card."""
    path, s, k = Path(path), clf.input_size, len(clf.classes)
    return (f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB): input uint8 (N, {s}, {s}, 3) RGB, outputs "
            f"probabilities and logits over {k} classes; class names, input size and mean/std in its metadata")  # fmt: skip

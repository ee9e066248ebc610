"""`cifar-cnn export MODEL --format onnx|torchscript`: portable models with the preprocessing
folded in.

The exported graph takes what an application has at hand, uint8 RGB images (N, 32, 32, 3)
(resize to 32x32 first: shorter side to 32, center crop), and returns calibrated class
probabilities (N, 10) and logits. Class names, mean/std, temperature and layout are also
stored in the file's metadata. The batch dimension is dynamic.
"""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import torch
from torch import nn

from cifar_cnn.errors import CifarCnnError
from cifar_cnn.predict import Classifier


class Exportable(nn.Module):
    """uint8 (N, 32, 32, 3) -> (probabilities, logits): normalization and temperature inside."""

    def __init__(self, clf: Classifier):
        super().__init__()
        self.model = clf.model.float().eval()
        self.register_buffer("mean", torch.tensor(clf.mean).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(clf.std).view(1, 3, 1, 1) * 255)
        self.temperature = clf.temperature

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = images.permute(0, 3, 1, 2).float()
        logits = self.model((x - self.mean) / self.std)
        return torch.softmax(logits / self.temperature, dim=1), logits


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


def export_metadata(clf: Classifier) -> dict[str, str]:
    return {
        "model": clf.name,
        "classes": json.dumps(clf.classes),
        "mean": json.dumps(list(clf.mean)),
        "std": json.dumps(list(clf.std)),
        "temperature": str(clf.temperature),
        "uncertain_threshold": str(clf.uncertain_threshold),
        "input": "images: uint8 (N, 32, 32, 3) RGB; resize the shorter side to 32 and center-crop first",
        "outputs": "probabilities (N, classes) calibrated; logits (N, classes)",
        "test_accuracy": str(clf.accuracy),
    }


def export_onnx(clf: Classifier, path: str | Path, opset: int = 18) -> Path:
    import onnx

    path = Path(path)
    module = Exportable(clf)
    example = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    batch = torch.export.Dim("batch", min=1, max=4096)
    torch.onnx.export(
        module, (example,), str(path), input_names=["images"], output_names=["probabilities", "logits"],
        dynamic_shapes={"images": {0: batch}}, opset_version=opset, dynamo=True, external_data=False,
    )  # fmt: skip
    proto = onnx.load(str(path))
    for key, value in export_metadata(clf).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(path))
    return path


def export_torchscript(clf: Classifier, path: str | Path) -> Path:
    path = Path(path)
    module = Exportable(clf)
    with torch.no_grad():
        traced = torch.jit.trace(module, torch.zeros(2, 32, 32, 3, dtype=torch.uint8))
    extra = {"metadata.json": json.dumps(export_metadata(clf))}
    torch.jit.save(traced, str(path), _extra_files=extra)
    return path


def export(clf: Classifier, path: str | Path, fmt: str = "onnx") -> Path:
    if fmt == "onnx":
        return export_onnx(clf, path)
    if fmt == "torchscript":
        return export_torchscript(clf, path)
    raise ValueError(f"unknown export format {fmt!r}: use onnx or torchscript")

"""`Classifier`: a trained model plus the preprocessing stored with it.

model = cifar_cnn.load("runs/fast/model.safetensors")   # or cifar_cnn.load() for the bundled one
model.predict("cat.jpg")            # Prediction(label='cat', score=0.91, ...)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from cifar_cnn.checkpoint import load_tensors
from cifar_cnn.errors import CheckpointError, ImageError
from cifar_cnn.evaluate import predict_logits
from cifar_cnn.hardware import choose_device, use_bf16
from cifar_cnn.images import ImageInput, load_image
from cifar_cnn.models import create_model
from cifar_cnn.preprocess import to_tensor

PRETRAINED = "fast"


@dataclass
class Prediction:
    label: str
    score: float
    top_k: list[tuple[str, float]]
    uncertain: bool = False
    filename: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        return {
            "filename": self.filename,
            "label": self.label,
            "score": self.score,
            "predictions": [{"label": k, "score": v} for k, v in self.top_k],
            "uncertain": self.uncertain,
        }


def pretrained_path(name: str = PRETRAINED) -> Path:
    path = Path(str(resources.files("cifar_cnn") / "pretrained" / f"{name}.safetensors"))
    if not path.is_file():
        raise CheckpointError(f"no bundled pretrained model named {name!r}")
    return path


class Classifier:
    def __init__(self, model: torch.nn.Module, metadata: dict, device: torch.device | None = None):
        self.model = model.eval()
        self.metadata = metadata
        self.device = device or torch.device("cpu")
        self.classes: list[str] = list(metadata["classes"])
        self.mean = tuple(metadata["mean"])
        self.std = tuple(metadata["std"])
        self.input_size = int(metadata["input_size"][-1])
        self.temperature = float(metadata.get("temperature", 1.0))
        self.uncertain_threshold = float(metadata.get("uncertain_threshold", 0.0))
        self.tta = int(metadata.get("recipe", {}).get("tta", 0))
        # bf16 where the hardware has native bf16 math: as in training, and ~3x faster on such CPUs.
        self.bf16 = use_bf16(self.device)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str | None = None) -> Classifier:
        """Load a model file, a run folder holding `model.safetensors`, or (None) the bundled
        pretrained `fast` model."""
        if path is None or (str(path) == PRETRAINED and not Path(path).exists()):
            path = pretrained_path()
        tensors, meta = load_tensors(path)
        if meta.get("kind") == "training_checkpoint":
            raise CheckpointError(f"{path} is a training checkpoint; use the run's model.safetensors")
        try:
            model = create_model(meta["model"], num_classes=len(meta["classes"]))
            model.load_state_dict(tensors)
        except (KeyError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"{path} does not hold a loadable cifar-cnn model: {exc}") from exc
        dev = choose_device(device)
        return cls(model.to(dev, memory_format=torch.channels_last), meta, dev)

    @property
    def name(self) -> str:
        return self.metadata["model"]

    @property
    def accuracy(self) -> float | None:
        return self.metadata.get("metrics", {}).get("test_accuracy")

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, 32, 32, 3) -> normalized model input, exactly as in training."""
        return to_tensor(images, self.mean, self.std)

    def logits(self, images: np.ndarray, tta: int | None = None, bf16: bool | None = None) -> torch.Tensor:
        """Logits (N, classes); `tta` defaults to the recipe's, `bf16` to what the hardware suits."""
        x = self.preprocess(images)
        tta = self.tta if tta is None else tta
        return predict_logits(self.model, x, tta=tta, batch_size=500, autocast=self.bf16 if bf16 is None else bf16)

    def predict_proba(self, images: np.ndarray, tta: int | None = None, bf16: bool | None = None) -> np.ndarray:
        """Calibrated class probabilities (N, classes) for uint8 images (N, 32, 32, 3)."""
        return torch.softmax(self.logits(images, tta, bf16) / self.temperature, dim=1).numpy()

    def predict(self, inputs: ImageInput | list[ImageInput], top_k: int = 5) -> Prediction | list[Prediction]:
        """Top-k labels with probabilities for one image or a list (paths, bytes, PIL images,
        uint8 arrays of any size). Raises ImageError for an unreadable image."""
        single = not isinstance(inputs, list)
        items = [inputs] if single else inputs
        arrays = np.stack([load_image(x, self.input_size) for x in items])
        results = self.to_predictions(self.predict_proba(arrays), top_k)
        for item, result in zip(items, results, strict=True):
            if isinstance(item, (str, os.PathLike)):
                result.filename = str(item)
        return results[0] if single else results

    def predict_files(self, paths: list[str], top_k: int = 5) -> list[Prediction | ImageError]:
        """Predict many files; a file that cannot be read yields its ImageError in its place."""
        arrays, ok, out = [], [], []
        for i, p in enumerate(paths):
            try:
                arrays.append(load_image(p, self.input_size))
                ok.append(i)
                out.append(None)
            except ImageError as exc:
                out.append(exc)
        if arrays:
            for i, pred in zip(ok, self.to_predictions(self.predict_proba(np.stack(arrays)), top_k), strict=True):
                pred.filename = str(paths[i])
                out[i] = pred
        return out

    def to_predictions(self, probs: np.ndarray, top_k: int) -> list[Prediction]:
        k = max(1, min(top_k, len(self.classes)))
        results = []
        for row in probs:
            order = np.argsort(-row)[:k]
            top = [(self.classes[i], float(row[i])) for i in order]
            results.append(Prediction(
                label=top[0][0], score=top[0][1], top_k=top,
                uncertain=top[0][1] < self.uncertain_threshold,
                probabilities={c: float(p) for c, p in zip(self.classes, row, strict=True)},
            ))  # fmt: skip
        return results


def load(path: str | os.PathLike | None = None, device: str | None = None) -> Classifier:
    """`cifar_cnn.load(path)`: see `Classifier.load`."""
    return Classifier.load(path, device)

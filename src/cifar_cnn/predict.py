"""`Classifier`: a trained model plus the preprocessing stored with it.

model = cifar_cnn.load("runs/fast/model.safetensors")   # or cifar_cnn.load() / load("fast"): bundled
model.predict("cat.jpg")            # Prediction(label='cat', score=0.91, ...)

A prediction is flagged `uncertain` for one of two reasons, said in words in `reason`:
"looks like none of the 10 classes" when the image's features lie far from every training image's
(the novelty detector stored in the model file, novelty.py), or "torn between cat and dog" when
it looks like the training images but the calibrated top probability is below the card's
`uncertain_threshold`. Files without a detector flag on the probability alone, as before.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from cifar_cnn.card import CUSTOM_MODEL, ModelCard
from cifar_cnn.checkpoint import load_tensors
from cifar_cnn.errors import CheckpointError, ImageError
from cifar_cnn.evaluate import predict_logits
from cifar_cnn.hardware import choose_device, use_bf16
from cifar_cnn.images import ImageInput, load_image, open_image, to_model_size
from cifar_cnn.models import create_model
from cifar_cnn.novelty import PREFIX as NOVELTY_PREFIX
from cifar_cnn.novelty import NoveltyDetector, logits_and_features
from cifar_cnn.preprocess import to_tensor
from cifar_cnn.pretrained import DEFAULT, bundled_path, has_bundled


@dataclass
class Prediction:
    label: str
    score: float
    top_k: list[tuple[str, float]]
    uncertain: bool = False
    reason: str | None = None  # why it is uncertain, in words (see the module docstring); None if not
    filename: str | None = None
    probabilities: dict[str, float] = field(default_factory=dict, repr=False)
    novelty: float | None = field(default=None, repr=False)  # the detector's score, when it ran

    def to_dict(self) -> dict:
        """The JSON shape of a prediction, shared by the CLI, the web API and the widget."""
        return {
            "filename": self.filename,
            "label": self.label,
            "score": self.score,
            "predictions": [{"label": k, "score": v} for k, v in self.top_k],
            "uncertain": self.uncertain,
            "reason": self.reason,
        }


class _ExportedModule(nn.Module):
    """A user's module saved as a torch.export program: runs without the user's code. It was
    exported in eval mode, so train()/eval() only set the flag (exported graphs refuse them)."""

    def __init__(self, program):
        super().__init__()
        self.graph = program.module()

    def train(self, mode: bool = True):
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.graph(x)


def none_of_these(num_classes: int) -> str:
    return f"looks like none of the {num_classes} classes"


def torn_between(first: str, second: str) -> str:
    return f"torn between {first} and {second}"


# Without a detector, a low top probability says "torn" when the top two hold at least this much
# probability, and "none of these" when it is spread over more classes.
TORN_MASS = 0.75


def _weights(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's own tensors: those of the novelty detector (`ood.*`) are not weights."""
    return {k: v for k, v in tensors.items() if not k.startswith(NOVELTY_PREFIX)}


def _build(tensors: dict[str, torch.Tensor], card: ModelCard, path) -> nn.Module:
    tensors = _weights(tensors)
    if card.model != CUSTOM_MODEL:
        model = create_model(card.model, num_classes=card.num_classes, input_size=card.input_size,
                             **card.model_kwargs)  # fmt: skip
        model.load_state_dict(tensors)
        return model
    if "exported_program" not in tensors:
        raise CheckpointError(f"{path} holds the weights of your own module but no exported program (torch.export "
                              f"could not capture it): in Python, cifar_cnn.load_weights({str(path)!r}, YourModule())")  # fmt: skip
    program = torch.export.load(io.BytesIO(tensors["exported_program"].numpy().tobytes()))
    return _ExportedModule(program)


class Classifier:
    """A trained model with everything needed to feed it (from its `ModelCard`): the one path
    from an image file to a prediction, used by the CLI, the notebook widgets, the web app,
    export and the report."""

    def __init__(self, model: torch.nn.Module, card: ModelCard | dict, device: torch.device | None = None,
                 detector: NoveltyDetector | None = None):  # fmt: skip
        self.card = card if isinstance(card, ModelCard) else ModelCard.from_dict(card)
        self.model = model.eval()
        self.device = device or torch.device("cpu")
        # bf16 where the hardware has native bf16 math: as in training, and ~3x faster on such CPUs.
        self.bf16 = use_bf16(self.device)
        self.detector = detector  # None: the flag is the probability threshold alone
        self._explain_model: nn.Module | None = None  # explain's private copy (explain._model_copy)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, device: str | None = None) -> Classifier:
        """Load a model file, a run folder holding `model.safetensors`, or a bundled model by
        name (None: the default bundled model)."""
        if path is None or (not Path(path).exists() and has_bundled(str(path))):
            path = bundled_path(DEFAULT if path is None else str(path))
        tensors, meta = load_tensors(path)
        if meta.get("kind") == "training_checkpoint":
            raise CheckpointError(f"{path} is a training checkpoint; use the run's model.safetensors")
        try:
            card = ModelCard.from_dict(meta)
            model = _build(tensors, card, path)
            detector = NoveltyDetector.from_file(card.novelty, tensors)
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            raise CheckpointError(f"{path} does not hold a loadable cifar-cnn model: {exc}") from exc
        dev = choose_device(device)
        return cls(model.to(dev, memory_format=torch.channels_last), card, dev, detector)

    # What the card says, under the names everything downstream uses.
    @property
    def metadata(self) -> dict:
        return self.card.to_dict()

    @property
    def classes(self) -> list[str]:
        return self.card.classes

    @property
    def mean(self) -> tuple[float, ...]:
        return self.card.mean

    @property
    def std(self) -> tuple[float, ...]:
        return self.card.std

    @property
    def input_size(self) -> int:
        return self.card.input_size

    @property
    def temperature(self) -> float:
        return self.card.temperature

    @property
    def uncertain_threshold(self) -> float:
        return self.card.uncertain_threshold

    @property
    def tta(self) -> int:
        return self.card.tta

    @property
    def name(self) -> str:
        return self.card.name

    @property
    def architecture(self) -> str:
        return self.card.model

    @property
    def accuracy(self) -> float | None:
        return self.card.accuracy

    def load_image(self, source: ImageInput, **limits) -> np.ndarray:
        """Any image input (path, bytes, PIL image, array of any size) -> uint8 (S, S, 3) at this
        model's input size, resized as in training. Raises ImageError."""
        return load_image(source, self.input_size, **limits)

    def view(self, source: ImageInput, **limits) -> tuple[Image.Image, np.ndarray]:
        """(the decoded original, what the model sees): for showing both, decoding once."""
        original = open_image(source, **limits)
        return original, to_model_size(original, self.input_size)

    def preprocess(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, S, S, 3) -> normalized model input, exactly as in training."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[1:] != (self.input_size, self.input_size, 3):
            raise ImageError(f"expected uint8 images of shape (N, {self.input_size}, {self.input_size}, 3) for this "
                             f"model, got {images.shape}: use Classifier.load_image to resize")  # fmt: skip
        return to_tensor(images, self.mean, self.std)

    def logits(self, images: np.ndarray, tta: int | None = None, bf16: bool | None = None) -> torch.Tensor:
        """Logits (N, classes); `tta` defaults to the recipe's, `bf16` to what the hardware suits."""
        x = self.preprocess(images)
        tta = self.tta if tta is None else tta
        return predict_logits(self.model, x, tta=tta, batch_size=500, autocast=self.bf16 if bf16 is None else bf16)

    def logits_and_novelty(self, images: np.ndarray, tta: int | None = None,
                           bf16: bool | None = None) -> tuple[torch.Tensor, np.ndarray | None]:  # fmt: skip
        """(logits (N, classes), novelty scores (N,) or None without a detector), one forward pass."""
        if self.detector is None or len(images) == 0:
            return self.logits(images, tta, bf16), None
        x = self.preprocess(images)
        tta = self.tta if tta is None else tta
        autocast = self.bf16 if bf16 is None else bf16
        if self.detector.needs_features:
            logits, features = logits_and_features(self.model, x, tta=tta, autocast=autocast,
                                                   stage=self.detector.stage)  # fmt: skip
            if features is None:  # a module whose layers cannot be hooked: the probability flag alone
                return logits, None
        else:
            logits, features = predict_logits(self.model, x, tta=tta, batch_size=500, autocast=autocast), None
        return logits, self.detector.scores(logits, features, self.temperature)

    def predict_proba(self, images: np.ndarray, tta: int | None = None, bf16: bool | None = None) -> np.ndarray:
        """Calibrated class probabilities (N, classes) for uint8 images (N, S, S, 3)."""
        return torch.softmax(self.logits(images, tta, bf16) / self.temperature, dim=1).numpy()

    def scores(self, images: np.ndarray, tta: int | None = None,
               bf16: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:  # fmt: skip
        """(calibrated probabilities (N, classes), novelty scores (N,) or None without a detector)
        for uint8 images (N, S, S, 3), in one forward pass: what `to_predictions` needs."""
        logits, novelty = self.logits_and_novelty(images, tta, bf16)
        return torch.softmax(logits / self.temperature, dim=1).numpy(), novelty

    def predict_arrays(self, images: np.ndarray, top_k: int = 5) -> list[Prediction]:
        """Predictions for uint8 images (N, S, S, 3) already at the model's size (`load_image`)."""
        if len(images) == 0:
            return []
        probs, novelty = self.scores(images)
        return self.to_predictions(probs, top_k, novelty)

    def predict(self, inputs: ImageInput | list[ImageInput], top_k: int = 5) -> Prediction | list[Prediction]:
        """Top-k labels with probabilities for one image or a list (paths, bytes, PIL images,
        uint8 arrays of any size). Raises ImageError for an unreadable image."""
        single = not isinstance(inputs, list)
        items = [inputs] if single else inputs
        arrays = np.stack([self.load_image(x) for x in items])
        results = self.predict_arrays(arrays, top_k)
        for item, result in zip(items, results, strict=True):
            if isinstance(item, (str, os.PathLike)):
                result.filename = str(item)
        return results[0] if single else results

    def predict_files(self, paths: list[str], top_k: int = 5) -> list[Prediction | ImageError]:
        """Predict many files; a file that cannot be read yields its ImageError in its place."""
        arrays, ok, out = [], [], []
        for i, p in enumerate(paths):
            try:
                arrays.append(self.load_image(p))
                ok.append(i)
                out.append(None)
            except ImageError as exc:
                out.append(exc)
        if arrays:
            for i, pred in zip(ok, self.predict_arrays(np.stack(arrays), top_k), strict=True):
                pred.filename = str(paths[i])
                out[i] = pred
        return out

    def explain(self, source: ImageInput, target: str | None = None, **limits):
        """Where in the picture the model found `target` (default: the predicted class): an
        `explain.Explanation` with the prediction, a heatmap and `.overlay()`/`.save(path)`."""
        from cifar_cnn.explain import explain

        return explain(self, source, target, **limits)

    def to_predictions(self, probs: np.ndarray, top_k: int, novelty: np.ndarray | None = None) -> list[Prediction]:
        """Predictions from calibrated probabilities (N, classes) and the detector's novelty scores
        (N,), both from `scores`. Without novelty scores the flag is the probability threshold alone."""
        k = max(1, min(top_k, len(self.classes)))
        if novelty is None:
            novelty = [None] * len(probs)
        results = []
        for row, remembered in zip(probs, novelty, strict=True):
            order = np.argsort(-row)
            top = [(self.classes[j], float(row[j])) for j in order[:k]]
            score = None if remembered is None else float(remembered)
            reason = self.reason(row, order, score)
            results.append(Prediction(
                label=top[0][0], score=top[0][1], top_k=top, uncertain=reason is not None, reason=reason,
                probabilities={c: float(p) for c, p in zip(self.classes, row, strict=True)}, novelty=score,
            ))  # fmt: skip
        return results

    def reason(self, row: np.ndarray, order: np.ndarray, novelty: float | None) -> str | None:
        """Why a prediction (probabilities `row`, classes by decreasing probability `order`) is
        uncertain, in words; None when it is not."""
        n = len(self.classes)
        if novelty is not None and novelty > self.detector.threshold:
            return none_of_these(n)
        if row[order[0]] >= self.uncertain_threshold:
            return None
        if n == 1:
            return none_of_these(n)
        if novelty is None and row[order[0]] + row[order[1]] < TORN_MASS:
            return none_of_these(n)  # no detector: probability spread over many classes
        return torn_between(self.classes[order[0]], self.classes[order[1]])


def load_weights(path: str | os.PathLike, module: nn.Module, device: str | None = None) -> Classifier:
    """A Classifier from a model file's weights and card put into `module` (your own class, built
    as in training): for files of modules that torch.export could not capture."""
    tensors, meta = load_tensors(path)
    try:
        module.load_state_dict({k: v for k, v in _weights(tensors).items() if k != "exported_program"})
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: the weights do not fit this module: {exc}") from exc
    dev = choose_device(device)
    card = ModelCard.from_dict(meta)
    detector = NoveltyDetector.from_file(card.novelty, tensors)
    return Classifier(module.to(dev, memory_format=torch.channels_last), card, dev, detector)


def load(path: str | os.PathLike | None = None, device: str | None = None) -> Classifier:
    """`cifar_cnn.load(path)`: see `Classifier.load`."""
    return Classifier.load(path, device)

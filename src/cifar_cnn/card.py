"""`ModelCard`: everything a model needs to be fed, trusted and explained, in one place.

Written once at the end of training (`train.finalize`), stored as JSON in the header of the
model's `.safetensors` file, and read back by everything downstream: `Classifier` (predict,
serve, widget), export, report and `cifar-cnn info`. Nothing else assembles or reads model
metadata by string keys, so a model is always fed as it was trained, whatever data it came from.

The JSON layout is flat and the same as the files written before the card existed (the bundled
model among them), so old files load unchanged; keys the card does not know are kept in `extra`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from cifar_cnn.recipes import RECIPES

CUSTOM_MODEL = "custom"  # a user's own nn.Module, stored as a torch.export program in the file


@dataclass
class ModelCard:
    model: str  # registry name ("fast", "keras_cnn"...) or CUSTOM_MODEL
    classes: list[str]
    mean: tuple[float, float, float]  # per-channel RGB statistics in [0, 1] used to normalize inputs
    std: tuple[float, float, float]
    input_size: int  # square side in pixels; images are resized as `images.to_model_size` does
    model_kwargs: dict = field(default_factory=dict)  # builder arguments beyond classes and size
    recipe: dict = field(default_factory=dict)
    seed: int = 0
    temperature: float = 1.0  # calibration: probabilities are softmax(logits / temperature)
    uncertain_threshold: float = 0.0  # calibrated top probability below which we say "uncertain"
    calibration: dict = field(default_factory=dict)  # where/how the two values above were fitted
    # The "looks like none of the classes" detector (novelty.py): {"score", "threshold", how fitted}.
    # Its tensors are `ood.*` in the same file. Empty in files written before it (and when the
    # model had no validation split): the flag is then the probability threshold alone, as before.
    novelty: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # test (or validation) accuracy, loss, per class
    data: dict = field(default_factory=dict)  # what the model was trained on: name, sizes, checksum
    init: str = "scratch"  # "scratch", "pretrained:fast" or the model file it was fine-tuned from
    history: list[dict] = field(default_factory=list)  # one dict per epoch
    train_seconds: float = 0.0
    total_seconds: float = 0.0
    hardware: dict = field(default_factory=dict)
    versions: dict = field(default_factory=dict)
    extra: dict = field(default_factory=dict)  # keys of older or newer files, kept as they were

    def __post_init__(self) -> None:
        self.classes = [str(c) for c in self.classes]
        self.mean = tuple(float(v) for v in self.mean)  # type: ignore[assignment]
        self.std = tuple(float(v) for v in self.std)  # type: ignore[assignment]
        self.input_size = int(self.input_size)

    @property
    def name(self) -> str:
        """What the model is called (page, API, OIP model name, export file): the recipe's name
        where that recipe is a named variant of this architecture (the `robust` recipe trains the
        `fast` net: "robust"), else the architecture's registry name."""
        recipe = RECIPES.get(str(self.recipe.get("name")))
        if self.model != CUSTOM_MODEL and recipe is not None and recipe.model == self.model:
            return recipe.name
        return self.model

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def tta(self) -> int:
        return int(self.recipe.get("tta", 0))

    @property
    def accuracy(self) -> float | None:
        return self.metrics.get("test_accuracy")

    @property
    def accuracy_label(self) -> str:
        """What `accuracy` was measured on: "test accuracy", or "validation accuracy" for a
        folder without a test split."""
        return "validation accuracy" if self.metrics.get("split") == "val" else "test accuracy"

    @property
    def resize(self) -> str:
        s = self.input_size
        return f"shorter side to {s} (antialiased bicubic), center crop {s}x{s}"

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON layout of the model file header."""
        out = {k: v for k, v in asdict(self).items() if k not in ("calibration", "extra")}
        out["mean"], out["std"] = list(self.mean), list(self.std)
        out["input_size"] = [3, self.input_size, self.input_size]  # (C, H, W), as timm configs say
        out["resize"] = self.resize
        out.update(self.calibration)  # holdout_images, holdout_ece_before... at the top level, as before
        return {**self.extra, **out}

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelCard:
        """Read a model file header (this layout or an older one). Raises KeyError or ValueError
        when the essentials (model, classes, mean, std, input size) are missing or malformed."""
        values = dict(values)
        values.pop("format_version", None)
        values.pop("resize", None)
        size = values.pop("input_size")
        known = {f.name for f in fields(cls)} - {"calibration", "extra", "input_size"}
        kwargs = {k: values.pop(k) for k in list(values) if k in known}
        calibration = {k: values.pop(k) for k in list(values) if k.startswith("holdout_")}
        return cls(
            input_size=int(size[-1] if isinstance(size, list | tuple) else size),
            calibration=calibration,
            extra=values,
            **kwargs,
        )

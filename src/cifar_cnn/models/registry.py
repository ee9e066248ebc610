"""A timm-style registry: each architecture registers a builder and its default config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from torch import nn

from cifar_cnn.preprocess import CIFAR10_MEAN, CIFAR10_STD, INPUT_SIZE


@dataclass(frozen=True)
class ModelConfig:
    """What a model needs to be fed correctly; saved with every checkpoint."""

    name: str
    description: str
    mean: tuple[float, float, float] = CIFAR10_MEAN
    std: tuple[float, float, float] = CIFAR10_STD
    input_size: tuple[int, int, int] = (3, INPUT_SIZE, INPUT_SIZE)
    default_recipe: str = ""
    kwargs: dict = field(default_factory=dict)
    # The layer whose feature maps `explain` weights (Grad-CAM): fine enough to point at an object
    # in the input, late enough to know the classes. "" lets explain find the last 4-D layer.
    cam_layer: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


_REGISTRY: dict[str, tuple[Callable[..., nn.Module], ModelConfig]] = {}


def register_model(config: ModelConfig) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _REGISTRY[config.name] = (builder, config)
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def get_model_config(name: str) -> ModelConfig:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    return _REGISTRY[name][1]


def create_model(name: str, num_classes: int = 10, input_size: int = INPUT_SIZE, **kwargs) -> nn.Module:
    """Build a freshly initialized model by registry name (e.g. "fast", "keras_cnn") with a head
    for `num_classes` classes, for square inputs of `input_size` pixels."""
    config = get_model_config(name)
    builder = _REGISTRY[name][0]
    if num_classes < 1:
        raise ValueError(f"a model needs at least one class, not {num_classes}")
    model = builder(num_classes=num_classes, input_size=input_size, **{**config.kwargs, **kwargs})
    model.model_name = name  # type: ignore[assignment]
    return model


def accepts(name: str, keyword: str) -> bool:
    """Whether model `name`'s builder takes `keyword` (e.g. "bn_eps")."""
    import inspect

    return keyword in inspect.signature(_REGISTRY[name][0]).parameters


def summary(model: nn.Module, input_size: tuple[int, ...] = (1, 3, 32, 32)) -> str:
    """A Keras-style `model.summary()`: each leaf layer with its output shape and parameters."""
    import torch

    rows: list[tuple[str, str, int]] = []
    hooks = []
    for name, module in model.named_modules():
        if next(module.children(), None) is None:  # leaf layers only

            def hook(mod, _inputs, output, name=name):
                shape = tuple(output.shape) if isinstance(output, torch.Tensor) else "?"
                params = sum(p.numel() for p in mod.parameters(recurse=False))
                rows.append((f"{name} ({type(mod).__name__})", str(shape).replace("(1,", "(None,"), params))

            hooks.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(input_size))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    width = max(len(r[0]) for r in rows) + 2
    lines = [f"{'Layer (type)':<{width}}{'Output Shape':<22}{'Param #':>10}", "=" * (width + 32)]
    lines += [f"{n:<{width}}{s:<22}{p:>10,}" for n, s, p in rows]
    lines += ["=" * (width + 32), f"Total params: {total:,}", f"Trainable params: {trainable:,}",
              f"Non-trainable params: {total - trainable:,}"]  # fmt: skip
    return "\n".join(lines)

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


def create_model(name: str, num_classes: int = 10, **kwargs) -> nn.Module:
    """Build a freshly initialized model by registry name (e.g. "fast", "keras_cnn")."""
    config = get_model_config(name)
    builder = _REGISTRY[name][0]
    model = builder(num_classes=num_classes, **{**config.kwargs, **kwargs})
    model.model_name = name  # type: ignore[assignment]
    return model

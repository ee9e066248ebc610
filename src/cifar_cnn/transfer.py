"""Transfer learning: start a model from the bundled CIFAR-10 weights or from any model file.

Every tensor whose name and shape match is copied; the head (the last linear layer) is
re-initialized unless the source was trained on exactly the same classes.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from cifar_cnn.card import ModelCard
from cifar_cnn.checkpoint import load_tensors
from cifar_cnn.datasets import ImageDataset
from cifar_cnn.errors import CheckpointError
from cifar_cnn.pretrained import bundled_path, has_bundled

# Below this many training images, "auto" fine-tunes the bundled weights: measured to reach about
# the accuracy of training from scratch in a quarter of the time (README, "Your own images").
AUTO_PRETRAINED_BELOW = 20_000
PRETRAINED = "pretrained"


def resolve_init(init: str, model: str, data: ImageDataset, log: Callable[..., None] = print,
                 recipe_init: str = "scratch") -> str:  # fmt: skip
    """ "scratch", "pretrained:<model>" or a model file path, from what the user asked for.
    `recipe_init`: the recipe's own start (`Recipe.init`), what "auto" means on the data it was tuned for."""
    init = str(init)
    if init == "scratch":
        return "scratch"
    if init == "auto":
        if data.recipe_tuned and recipe_init == PRETRAINED:
            return resolve_init(PRETRAINED, model, data, log)
        if data.recipe_tuned or not has_bundled(model) or len(data.train_x) >= AUTO_PRETRAINED_BELOW:
            return "scratch"
        log(f"Fine-tuning from the bundled CIFAR-10 `{model}` weights (the default below "
            f"{AUTO_PRETRAINED_BELOW:,} training images; --init scratch trains from scratch)")  # fmt: skip
        return f"{PRETRAINED}:{model}"
    if init == PRETRAINED:
        if not has_bundled(model):
            raise CheckpointError(f"no bundled pretrained weights for model {model!r} (only for the `fast` model): "
                                  "use --recipe fast, --init scratch, or --init PATH to a model file")  # fmt: skip
        return f"{PRETRAINED}:{model}"
    path = Path(init)
    if not path.exists():
        raise CheckpointError(f"--init {init}: no such model file (use auto, scratch, pretrained or a model file)")
    _, meta = load_tensors(path)
    if meta.get("model") != model:
        raise CheckpointError(f"--init {init} holds a {meta.get('model')!r} model but the recipe trains {model!r}: "
                              f"use --recipe {meta.get('recipe', {}).get('name', meta.get('model'))}")  # fmt: skip
    return str(path)


def head_names(model: nn.Module) -> set[str]:
    """Parameter names of the last linear layer: the classifier head."""
    last = [name for name, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not last:
        return set()
    prefix = f"{last[-1]}." if last[-1] else ""
    return {f"{prefix}{p}" for p, _ in model.get_submodule(last[-1]).named_parameters()}


def load_matching(model: nn.Module, source: str, classes: list[str] | None = None) -> str:
    """Copy the matching tensors of `source` ("pretrained:<name>" or a model file) into `model`.
    Returns a one-line account of what was loaded."""
    path = bundled_path(source.split(":", 1)[1]) if source.startswith(f"{PRETRAINED}:") else Path(source)
    tensors, meta = load_tensors(path)
    same_classes = classes is not None and list(meta.get("classes", [])) == list(classes)
    skip = set() if same_classes else head_names(model)
    own = model.state_dict()
    loaded = {k: v for k, v in tensors.items() if k in own and k not in skip and own[k].shape == v.shape}
    model.load_state_dict(loaded, strict=False)
    where = "the bundled CIFAR-10 weights" if source.startswith(PRETRAINED) else str(path)
    card = ModelCard.from_dict(meta)
    head = "head kept (same classes)" if same_classes else "head re-initialized for the new classes"
    return f"Initialized from {where} ({card.model}, {card.num_classes} classes): {len(loaded)} of {len(own)} tensors; {head}"

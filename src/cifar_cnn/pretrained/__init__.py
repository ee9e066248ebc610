"""Model files bundled with the package: `<name>.safetensors`, loadable by name.

`cifar_cnn.load()` uses DEFAULT; `cifar_cnn.load("fast")` or `--model fast` picks one by name.
    fast    the `fast` recipe from scratch (8 epochs): the starting point of every fine-tune
            (`--init pretrained` loads the bundled file named after the architecture)
    robust  `fast` fine-tuned 4 epochs with photometric augmentation: the default for photos
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from cifar_cnn.errors import CheckpointError

DEFAULT = "robust"  # README "Photos in the wild": the candidates table and why


def _folder() -> Path:
    return Path(str(resources.files("cifar_cnn.pretrained")))


def list_bundled() -> list[str]:
    return sorted(p.stem for p in _folder().glob("*.safetensors"))


def has_bundled(name: str) -> bool:
    return (_folder() / f"{name}.safetensors").is_file()


def bundled_path(name: str = DEFAULT) -> Path:
    if not has_bundled(name):
        raise CheckpointError(f"no bundled model named {name!r}; bundled: {', '.join(list_bundled())}")
    return _folder() / f"{name}.safetensors"

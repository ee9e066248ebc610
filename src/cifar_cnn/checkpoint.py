"""Model files and training checkpoints: safetensors + JSON metadata, written atomically.

A model file is one `.safetensors` file whose header carries the JSON metadata (model name,
class names, normalization, recipe, metrics, temperature, versions) under the key "cifar_cnn",
so a model can be moved around as a single file. Loading reads tensors only: nothing is
unpickled, so an untrusted file cannot run code.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from cifar_cnn.errors import CheckpointError

META_KEY = "cifar_cnn"
FORMAT_VERSION = 1


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, fsync, then rename: readers see the old file
    or the new one, never half of one (also after kill -9 or a full disk)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except OSError as exc:
        raise CheckpointError(f"could not write {path}: {exc.strerror or exc}; the previous file is kept") from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict) -> None:
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {META_KEY: json.dumps({"format_version": FORMAT_VERSION, **metadata})}
    atomic_write_bytes(Path(path), st_save(tensors, metadata=header))


def load_tensors(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """Read tensors and metadata. Raises CheckpointError for missing or damaged files."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.safetensors"
    if not path.is_file():
        raise CheckpointError(f"model file not found: {path}")
    data = path.read_bytes()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
        metadata = json.loads(header.get("__metadata__", {}).get(META_KEY, "null"))
    except (SafetensorError, ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{path} is not a valid safetensors file ({exc}); it may be truncated or corrupt"
        ) from exc
    if not isinstance(metadata, dict):
        raise CheckpointError(f"{path} is a safetensors file but not a cifar-cnn model (no '{META_KEY}' metadata)")
    return tensors, metadata


def split_prefix(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def optimizer_tensors(optimizer: torch.optim.Optimizer, prefix: str) -> tuple[dict[str, torch.Tensor], dict]:
    """Flatten an optimizer's state into tensors + JSON-able values (no pickle needed)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if torch.is_tensor(value):
                tensors[f"{prefix}{pid}.{key}"] = value
            else:
                scalars[f"{pid}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def load_optimizer_tensors(
    optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], prefix: str, extra: dict
) -> None:
    state: dict[int, dict] = {}
    for name, value in split_prefix(tensors, prefix).items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    for name, value in extra["scalars"].items():
        pid, key = name.split(".", 1)
        state.setdefault(int(pid), {})[key] = value
    optimizer.load_state_dict({"state": state, "param_groups": extra["param_groups"]})

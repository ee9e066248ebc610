"""The one preprocessing path shared by training, evaluation and prediction.

uint8 images (N, 32, 32, 3) -> float tensors (N, 3, 32, 32), normalized with the dataset
mean/std stored in the model's metadata, in channels_last memory order (faster convolutions
with oneDNN and cuDNN). Augmentation works on whole batches of tensors: no per-image Python.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

# Per-channel statistics of the CIFAR-10 training images (RGB, in [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
INPUT_SIZE = 32


def to_tensor(
    images: np.ndarray | torch.Tensor,
    mean: Sequence[float] = CIFAR10_MEAN,
    std: Sequence[float] = CIFAR10_STD,
    dtype: torch.dtype = torch.float32,
    chunk: int = 8192,
) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalized float (N, 3, H, W), channels_last.

    Works in chunks so that converting all 50,000 training images never holds float32 copies
    of the whole set (peak memory stays near the size of the result)."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"expected uint8 images of shape (N, H, W, 3), got {tuple(x.shape)} {x.dtype}")
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    n, h, w, _ = x.shape
    out = torch.empty((n, 3, h, w), dtype=dtype).contiguous(memory_format=torch.channels_last)
    for start in range(0, n, chunk):
        part = x[start : start + chunk].permute(0, 3, 1, 2).float().div_(255)
        out[start : start + chunk] = (part - m) / s
    return out


def batch_flip(images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    # Draws on the generator's device (the CPU), so a seed gives the same run on CPU and GPU.
    mask = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(mask.view(-1, 1, 1, 1), images.flip(-1), images)


def batch_translate(padded: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random crops of `size` from images reflect-padded beforehand (N, C, size+2r, size+2r).

    Loops over the (2r+1)^2 possible shifts, not over images, so it costs a few tensor ops.
    """
    r = (padded.shape[-1] - size) // 2
    shifts = torch.randint(-r, r + 1, (len(padded), 2), generator=generator).to(padded.device)
    out = torch.empty((len(padded), padded.shape[1], size, size), dtype=padded.dtype, device=padded.device)
    out = out.contiguous(memory_format=torch.channels_last)
    for sy in range(-r, r + 1):
        for sx in range(-r, r + 1):
            mask = (shifts[:, 0] == sy) & (shifts[:, 1] == sx)
            out[mask] = padded[mask, :, r + sy : r + sy + size, r + sx : r + sx + size]
    return out


def reflect_pad(images: torch.Tensor, pad: int) -> torch.Tensor:
    return F.pad(images, (pad,) * 4, mode="reflect") if pad > 0 else images


def batch_cutout(images: torch.Tensor, size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Zero a random size x size square inside each image (DeVries & Taylor 2017, as airbench96
    does with 12). Zero is the dataset mean after normalization."""
    n, _, h, w = images.shape
    size = min(size, h, w)
    corners = torch.stack([torch.randint(0, h - size + 1, (n,), generator=generator),
                           torch.randint(0, w - size + 1, (n,), generator=generator)], 1).to(images.device)  # fmt: skip
    ys = torch.arange(h, device=images.device).view(1, h, 1)
    xs = torch.arange(w, device=images.device).view(1, 1, w)
    top, left = corners[:, 0].view(n, 1, 1), corners[:, 1].view(n, 1, 1)
    inside = (ys >= top) & (ys < top + size) & (xs >= left) & (xs < left + size)
    return images.masked_fill(inside.unsqueeze(1), 0)

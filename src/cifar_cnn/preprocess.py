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


def batch_resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Downscale a batch to size x size for progressive resizing: bilinear with antialiasing, so
    a smaller image looks like the same scene seen from further away rather than an aliased one."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    out = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return out.to(images.dtype).contiguous(memory_format=torch.channels_last)


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


# Photometric augmentation, for robustness to what photos do to pixels (the `robust` recipe):
# colour, noise and blur, on whole batches of normalized images. Each works in pixel units
# ([0, 1]: normalized * std + mean) and hands back normalized images.


def _pixels(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> tuple[torch.Tensor, ...]:
    m = torch.tensor(mean, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return images * s + m, m, s


def _uniform(n: int, low: float, high: float, generator, device) -> torch.Tensor:
    return (low + (high - low) * torch.rand(n, generator=generator)).to(device).view(n, 1, 1, 1)


def batch_color_jitter(images: torch.Tensor, strength: float, mean: Sequence[float], std: Sequence[float],
                       generator: torch.Generator | None = None) -> torch.Tensor:  # fmt: skip
    """Per image: saturation, brightness and contrast each scaled by a factor in [1 - strength,
    1 + strength] (torchvision's ColorJitter, on the whole batch at once)."""
    n = len(images)
    x, m, s = _pixels(images, mean, std)
    sat, bright, contrast = (_uniform(n, 1 - strength, 1 + strength, generator, x.device) for _ in range(3))
    grey = x.mean(1, keepdim=True)
    x = grey + sat * (x - grey)
    x = x * bright
    level = x.mean((1, 2, 3), keepdim=True)
    x = (level + contrast * (x - level)).clamp_(0, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


def batch_noise(images: torch.Tensor, fraction: float, mean: Sequence[float], std: Sequence[float],
                generator: torch.Generator | None = None, max_sigma: float = 0.1) -> torch.Tensor:  # fmt: skip
    """Gaussian pixel noise on a random `fraction` of the images, sigma uniform in (0, max_sigma]
    of the pixel range (CIFAR-10-C's Gaussian noise runs 0.04 to 0.10)."""
    n = len(images)
    x, m, s = _pixels(images, mean, std)
    chosen = (torch.rand(n, generator=generator) < fraction).to(x.device).view(n, 1, 1, 1)
    sigma = _uniform(n, 0, max_sigma, generator, x.device) * chosen
    noise = torch.randn(tuple(images.shape), generator=generator).to(x.device)
    x = (x + sigma * noise).clamp_(0, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


def batch_blur(images: torch.Tensor, fraction: float, generator: torch.Generator | None = None,
               sigmas: tuple[float, float] = (0.5, 1.5)) -> torch.Tensor:  # fmt: skip
    """Gaussian blur (5x5, one sigma per batch drawn from `sigmas`) on a random `fraction` of the
    images. Blurring is linear, so it needs no trip to pixel units."""
    n, c = images.shape[:2]
    sigma = float(sigmas[0] + (sigmas[1] - sigmas[0]) * torch.rand(1, generator=generator))
    taps = torch.exp(-((torch.arange(5, dtype=images.dtype) - 2) ** 2) / (2 * sigma**2))
    kernel = (taps / taps.sum()).to(images.device)
    kernel2d = (kernel[:, None] * kernel[None, :]).expand(c, 1, 5, 5)
    blurred = F.conv2d(F.pad(images, (2, 2, 2, 2), mode="reflect"), kernel2d, groups=c)
    chosen = (torch.rand(n, generator=generator) < fraction).to(images.device).view(n, 1, 1, 1)
    return torch.where(chosen, blurred, images).contiguous(memory_format=torch.channels_last)


def batch_patch_shuffle(images: torch.Tensor, grid: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """Outliers made of the batch itself: every image cut into grid x grid patches, and the
    patches of the whole batch dealt out again at random, so each new image is a mosaic of
    training-image textures from several images with no object in it. Outlier exposure (Hendrycks
    et al. 2019) teaches the network to answer such images with a flat distribution."""
    n, c, h, w = images.shape
    ph, pw = h // grid, w // grid
    x = images[:, :, : ph * grid, : pw * grid].contiguous()
    patches = x.view(n, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(n * grid * grid, c, ph, pw)
    patches = patches[torch.randperm(len(patches), generator=generator).to(images.device)]
    mosaic = patches.view(n, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(n, c, ph * grid, pw * grid)
    out = images.clone()
    out[:, :, : ph * grid, : pw * grid] = mosaic
    return out.contiguous(memory_format=torch.channels_last)

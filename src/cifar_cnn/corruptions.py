"""The 15 corruptions of CIFAR-10-C (Hendrycks & Dietterich, ICLR 2019) at 5 severities, and a
"photo pipeline" shift: what a test image goes through when it comes back as a phone photo.

Each corruption is a short function over a batch of uint8 images (N, S, S, 3) that returns a
new uint8 batch of the same shape, drawing its randomness from the `numpy.random.Generator` it is
given; `corrupt()` seeds that generator from (seed, corruption, severity, stream), so a result
is reproducible. The parameters are CIFAR-10-C's, read from Hendrycks' `make_cifar_c.py`
(github.com/hendrycks/robustness, ImageNet-C/create_c/), which are milder than ImageNet-C's
(the `imagecorruptions` package) because CIFAR images are 32 px.

Written with numpy and Pillow only, so the operations the original borrowed from scikit-image,
SciPy, OpenCV and ImageMagick are re-implemented here, following their definitions:
Gaussian filters as `scipy.ndimage.gaussian_filter` (same truncation and border modes), zooms
as `scipy.ndimage.zoom(order=1)`, the affine warp and `filter2D` as OpenCV's (reflect-101
borders; bilinear in floating point where OpenCV rounds coordinates to 1/32 px), motion blur
as ImageMagick's `MotionBlurImage` (a one-sided line of Gaussian weights, edge pixels repeated).
Values are truncated to uint8 as the original's `np.uint8(...)` did.

Where this is not CIFAR-10-C, and so only "CIFAR-10-C-like":
- the random draws differ (the published set used numpy's global generator, unseeded), so no
  image is bit-identical to the published `.npy` files, while the distributions are the same;
- frost: the original blends crops of five photos of frost; here the frost layer is
  synthesized (ice-crystal streaks over a plasma-fractal haze, tinted and scaled to the
  colours and contrast measured on those photos at the original's 0.2 scale);
- glass blur keeps the original's behaviour: its pixel "swap" (`x[h, w], x[h2, w2] = x[h2, w2],
  x[h, w]` on numpy views) copies the neighbour's pixel rather than swapping, and CIFAR-10-C
  was made that way.

The protocol is defined at 32 px. For other input sizes S, the spatial parameters (blur radii
and sigmas, shuffle distance, displacement fields, motion length) scale by S / 32; at 32 px the
parameters are exactly CIFAR-10-C's.
"""

from __future__ import annotations

import io
import math
import zlib
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

# Bump when any corruption's output changes: cached robustness results are keyed by it.
VERSION = 1
SEVERITIES = (1, 2, 3, 4, 5)
Batch = np.ndarray  # uint8 (N, S, S, 3)


# ---------------------------------------------------------------------------------------------
# Helpers: conversions, filters, resampling (float64 arrays (N, H, W[, C]) unless stated)


def _float(images: Batch) -> np.ndarray:
    return np.asarray(images, dtype=np.float64) / 255.0


def _uint8(x01: np.ndarray) -> Batch:
    """[0, 1] floats -> uint8, truncating as the original's `np.uint8(...)` did."""
    return (np.clip(x01, 0.0, 1.0) * 255.0).astype(np.uint8)


def _scale(images: np.ndarray) -> float:
    """Spatial parameters are CIFAR-10-C's at 32 px and scale with the image side."""
    return images.shape[1] / 32


def _correlate(x: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """Correlate axes 1 and 2 of x with a 2-D kernel (odd sides), borders padded by `numpy.pad`'s
    `mode` ("edge" = SciPy's "nearest", "symmetric" = SciPy's "reflect", "reflect" = OpenCV's
    BORDER_REFLECT_101). Zero rows and columns of the kernel cost nothing."""
    kh, kw = kernel.shape
    ry, rx = kh // 2, kw // 2
    pad = [(0, 0), (ry, ry), (rx, rx)] + [(0, 0)] * (x.ndim - 3)
    xp = np.pad(x, pad, mode=mode)
    h, w = x.shape[1:3]
    out = np.zeros_like(x)
    for i, j in zip(*np.nonzero(kernel)):
        out += kernel[i, j] * xp[:, i : i + h, j : j + w]
    return out


def _gaussian_kernel(sigma: float, truncate: float) -> np.ndarray:
    """scipy.ndimage's 1-D Gaussian: radius int(truncate * sigma + 0.5)."""
    radius = int(truncate * sigma + 0.5)
    t = np.arange(-radius, radius + 1)
    k = np.exp(-0.5 * t**2 / sigma**2)
    return k / k.sum()


def _gaussian(x: np.ndarray, sigma: float, mode: str = "edge", truncate: float = 4.0) -> np.ndarray:
    """`scipy.ndimage.gaussian_filter` (as skimage's `gaussian`) over axes 1 and 2."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel(sigma, truncate)
    return _correlate(_correlate(x, k[:, None], mode), k[None, :], mode)


def _zoom_linear(x: np.ndarray, size: int) -> np.ndarray:
    """`scipy.ndimage.zoom(order=1)` of axes 1 and 2 to size x size: bilinear with corners aligned."""
    n = x.shape[1]
    pos = np.arange(size) * ((n - 1) / (size - 1)) if size > 1 else np.zeros(1)
    i0 = np.minimum(np.floor(pos).astype(int), n - 2)
    f = pos - i0
    fy = f.reshape((1, size, 1) + (1,) * (x.ndim - 3))
    x = x[:, i0] * (1 - fy) + x[:, i0 + 1] * fy
    fx = f.reshape((1, 1, size) + (1,) * (x.ndim - 3))
    return x[:, :, i0] * (1 - fx) + x[:, :, i0 + 1] * fx


def _clipped_zoom(x: np.ndarray, factor: float) -> np.ndarray:
    """Zoom into the center by `factor`, keeping the size (the original's `clipped_zoom`)."""
    h = x.shape[1]
    ch = int(np.ceil(h / factor))
    top = (h - ch) // 2
    out_size = round(ch * factor)  # scipy.ndimage.zoom's output shape
    zoomed = x[:, top : top + ch, top : top + ch]
    if out_size != ch:
        zoomed = _zoom_linear(zoomed, out_size)
    trim = (zoomed.shape[1] - h) // 2
    return zoomed[:, trim : trim + h, trim : trim + h]


def _motion_blur(x: np.ndarray, radius: float, sigma: float, angles: np.ndarray) -> np.ndarray:
    """ImageMagick's MotionBlurImage on float images (N, S, S, C) in 0-255, one angle (degrees) per
    image: a one-sided line of 2 * ceil(radius) + 1 taps with weights exp(-i^2 / 2 sigma^2), pixels
    beyond the border repeated (ImageMagick's default "edge" virtual pixels)."""
    width = 2 * math.ceil(radius) + 1
    i = np.arange(width)
    weights = np.exp(-(i**2) / (2 * sigma**2))
    weights /= weights.sum()
    a = np.deg2rad(angles)[:, None]
    dx = np.ceil(i * np.cos(a) - 0.5).astype(int)  # (N, width)
    dy = np.ceil(i * np.sin(a) - 0.5).astype(int)
    n, s = x.shape[:2]
    grid = np.arange(s)
    batch = np.arange(n)[:, None, None]
    out = np.zeros_like(x)
    for j in range(width):
        rows = np.clip(grid[None, :, None] + dy[:, j, None, None], 0, s - 1)
        cols = np.clip(grid[None, None, :] + dx[:, j, None, None], 0, s - 1)
        out += weights[j] * x[batch, rows, cols]
    return out


def _imagemagick_8bit(x: np.ndarray) -> np.ndarray:
    """What ImageMagick's 16-bit quantum and 8-bit PNG output make of 0-255 floats: rounded to
    1/257, then truncated (matches the original's motion blur exactly)."""
    return np.clip(np.floor(np.rint(x * 257) / 257), 0, 255)


def _border_index(i: np.ndarray, n: int, mode: str) -> np.ndarray:
    """Indices beyond [0, n) folded back: "reflect101" (OpenCV) or "symmetric" (SciPy's "reflect")."""
    if mode == "reflect101":
        period = 2 * (n - 1)
        i = np.abs(i) % period
        return np.where(i >= n, period - i, i)
    period = 2 * n
    i = np.where(i < 0, -i - 1, i) % period
    return np.where(i >= n, period - 1 - i, i)


def _bilinear(x: np.ndarray, rows: np.ndarray, cols: np.ndarray, mode: str) -> np.ndarray:
    """Sample images x (N, S, S, C) at float coordinates rows, cols (N, S, S), bilinearly."""
    n, s = x.shape[:2]
    batch = np.arange(n)[:, None, None]
    r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
    fr, fc = (rows - r0)[..., None], (cols - c0)[..., None]
    r = [_border_index(r0, s, mode), _border_index(r0 + 1, s, mode)]
    c = [_border_index(c0, s, mode), _border_index(c0 + 1, s, mode)]
    top = x[batch, r[0], c[0]] * (1 - fc) + x[batch, r[0], c[1]] * fc
    bottom = x[batch, r[1], c[0]] * (1 - fc) + x[batch, r[1], c[1]] * fc
    return top * (1 - fr) + bottom * fr


def _plasma_fractal(rng: np.random.Generator, n: int, mapsize: int, decay: float) -> np.ndarray:
    """The original's diamond-square heightmaps, n at once: (n, mapsize, mapsize) in [0, 1]."""
    a = np.zeros((n, mapsize, mapsize))
    step, wibble = mapsize, 100.0

    def wibbled_mean(values: np.ndarray) -> np.ndarray:
        return values / 4 + wibble * rng.uniform(-wibble, wibble, values.shape)

    while step >= 2:
        half = step // 2
        corners = a[:, 0::step, 0::step]
        square = corners + np.roll(corners, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        a[:, half::step, half::step] = wibbled_mean(square)
        dr, ul = a[:, half::step, half::step], a[:, 0::step, 0::step]
        a[:, 0::step, half::step] = wibbled_mean(dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=2))
        a[:, half::step, 0::step] = wibbled_mean(dr + np.roll(dr, 1, axis=2) + ul + np.roll(ul, -1, axis=1))
        step //= 2
        wibble /= decay
    a -= a.min(axis=(1, 2), keepdims=True)
    return a / a.max(axis=(1, 2), keepdims=True)


def _per_image_pil(images: Batch, fn: Callable[[Image.Image], Image.Image]) -> Batch:
    return np.stack([np.asarray(fn(Image.fromarray(img)).convert("RGB")) for img in images])


# ---------------------------------------------------------------------------------------------
# Noise


def gaussian_noise(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Additive Gaussian noise of standard deviation c (in [0, 1] units)."""
    c = (0.04, 0.06, 0.08, 0.09, 0.10)[severity - 1]
    x = _float(images)
    return _uint8(x + rng.normal(scale=c, size=x.shape))


def shot_noise(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Poisson (photon) noise: c photons at full intensity."""
    c = (500, 250, 100, 75, 50)[severity - 1]
    return _uint8(rng.poisson(_float(images) * c) / c)


def impulse_noise(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Salt and pepper on a share c of the values, each channel on its own (skimage's "s&p")."""
    c = (0.01, 0.02, 0.03, 0.05, 0.07)[severity - 1]
    x = _float(images)
    flipped = rng.random(x.shape) <= c
    salted = rng.random(x.shape) <= 0.5
    x[flipped & salted] = 1.0
    x[flipped & ~salted] = 0.0
    return _uint8(x)


# ---------------------------------------------------------------------------------------------
# Blur


def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """The original's antialiased disk kernel (17 x 17 for radii up to 8), zero rows trimmed."""
    half = max(8, math.ceil(radius))
    t = np.arange(-half, half + 1)
    disk = (t[:, None] ** 2 + t[None, :] ** 2 <= radius**2).astype(np.float64)
    disk /= disk.sum()
    # cv2.GaussianBlur(ksize=(3, 3) below radius 8, else (5, 5), sigma=alias_blur), reflect-101 borders
    g = np.exp(-((np.arange(3 if radius <= 8 else 5) - (1 if radius <= 8 else 2)) ** 2) / (2 * alias_blur**2))
    g /= g.sum()
    kernel = _correlate(_correlate(disk[None, ..., None], g[:, None], "reflect"), g[None, :], "reflect")[0, ..., 0]
    rows, cols = np.nonzero(kernel.any(1))[0], np.nonzero(kernel.any(0))[0]
    keep = max(half - rows.min(), cols.max() - half, half - cols.min(), rows.max() - half)
    return kernel[half - keep : half + keep + 1, half - keep : half + keep + 1]


def defocus_blur(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Convolution with an antialiased disk (an out-of-focus lens)."""
    radius, alias_blur = ((0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1))[severity - 1]
    s = _scale(images)
    return _uint8(_correlate(_float(images), _disk(radius * s, alias_blur * s), "reflect"))


def glass_blur(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Gaussian blur, pixels locally scrambled, blurred again (frosted glass)."""
    sigma, delta, iterations = ((0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2))[severity - 1]
    s = _scale(images)
    sigma, delta = sigma * s, max(1, round(delta * s))
    x = _uint8(_gaussian(_float(images), sigma))
    n, size = x.shape[:2]
    batch = np.arange(n)
    positions = [(h, w) for h in range(size - delta, delta, -1) for w in range(size - delta, delta, -1)]
    for _ in range(iterations):
        shifts = rng.integers(-delta, delta, size=(len(positions), 2, n))  # randint(-d, d): d excluded
        for (h, w), (dx, dy) in zip(positions, shifts, strict=True):
            x[:, h, w] = x[batch, h + dy, w + dx]  # the original's "swap" copies (see module docstring)
    return _uint8(_gaussian(x / 255.0, sigma))


def motion_blur(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """ImageMagick's motion blur (radius, sigma) at an angle drawn in [-45, 45) degrees; no
    ImageMagick needed: the same one-sided line kernel, brought to 8 bits as its PNG output was."""
    radius, sigma = ((6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5))[severity - 1]
    s = _scale(images)
    angles = rng.uniform(-45, 45, size=len(images))
    out = _motion_blur(np.asarray(images, dtype=np.float64), radius * s, sigma * s, angles)
    return _imagemagick_8bit(out).astype(np.uint8)


def _zoom_factors(severity: int) -> np.ndarray:
    top = (1.06, 1.11, 1.16, 1.21, 1.26)[severity - 1]
    return np.arange(1, top, 0.01)  # the original's ranges, float steps included


def zoom_blur(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """The average of the image and of center zooms by 1 up to 1.05 ... 1.25 (moving towards it)."""
    x = _float(images)
    out = np.zeros_like(x)
    for factor in _zoom_factors(severity):
        out += _clipped_zoom(x, float(factor))
    return _uint8((x + out) / (len(_zoom_factors(severity)) + 1))


# ---------------------------------------------------------------------------------------------
# Weather


def snow(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Thresholded noise zoomed into flakes, motion-blurred downwards at an angle in [-135, -45),
    added twice (the second copy turned 180 degrees) over an image washed towards its grey."""
    mean, std, zoom, threshold, radius, sigma, keep = (
        (0.1, 0.2, 1, 0.6, 8, 3, 0.95),
        (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
        (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9),
        (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
        (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8),
    )[severity - 1]
    x = _float(images)
    n, size = x.shape[:2]
    s = _scale(images)
    layer = _clipped_zoom(rng.normal(loc=mean, scale=std, size=(n, size, size, 1)), zoom)
    layer[layer < threshold] = 0
    layer = (np.clip(layer, 0, 1) * 255).astype(np.uint8).astype(np.float64)  # as saved to PNG
    angles = rng.uniform(-135, -45, size=n)
    layer = _imagemagick_8bit(_motion_blur(layer, radius * s, sigma * s, angles)) / 255.0
    grey = x @ np.array([0.299, 0.587, 0.114])  # cv2.COLOR_RGB2GRAY
    x = keep * x + (1 - keep) * np.maximum(x, grey[..., None] * 1.5 + 0.5)
    return _uint8(x + layer + np.rot90(layer, k=2, axes=(1, 2)))


# Mean RGB, spread of crop means and within-crop contrast of the original's frost photos
# (frost1.png to frost5.jpg, resized by 0.2 with cv2.resize as it does, in 32 px crops; frost2 and
# frost3 are the same picture). The original draws one of these five uniformly.
_FROST_LOOKS = (
    ((78, 149, 165), (17, 9, 8), (22, 13, 13)),
    ((198, 203, 212), (8, 9, 9), (18, 18, 19)),
    ((198, 203, 212), (8, 9, 9), (18, 18, 19)),
    ((143, 158, 171), (10, 10, 11), (26, 26, 27)),
    ((102, 114, 126), (16, 16, 15), (35, 35, 34)),
)


def frost_layer(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    """Synthesized frost, float (n, size, size, 3) in 0-255: bright ice-crystal needles (sparse
    seeds drawn out along three random directions, both ways) over a plasma-fractal haze, with
    fine grain, normalized, then given the colour, brightness spread and contrast of one of the
    original's frost photos (see `_FROST_LOOKS`)."""
    s = size / 32
    seeds = (rng.random((n, size, size, 1)) < 0.03) * rng.uniform(0.5, 1.0, (n, size, size, 1)) * 255
    crystals = np.zeros_like(seeds)
    for _ in range(3):  # needles: even lines of 4 to 8 px both ways from each seed
        angle = rng.uniform(0, 360, n)
        length = rng.uniform(2, 4) * s
        for direction in (angle, angle + 180):
            crystals += _motion_blur(seeds, length, 4 * length, direction)
    mapsize = 1 << max(5, math.ceil(math.log2(size)))
    haze = _plasma_fractal(rng, n, mapsize, 2.0)[:, :size, :size, None]
    # fine grain: the photos were shrunk without antialiasing, so neighbouring pixels differ about as
    # much as the whole crop does (mean |difference| 0.7 to 0.9 standard deviations); this gives 0.8
    texture = crystals / 255 + 0.3 * haze + 0.1 * rng.standard_normal((n, size, size, 1))
    texture = (texture - texture.mean((1, 2, 3), keepdims=True)) / (texture.std((1, 2, 3), keepdims=True) + 1e-8)
    looks = rng.integers(len(_FROST_LOOKS), size=n)
    mean, spread, contrast = (np.array([_FROST_LOOKS[k][j] for k in looks], dtype=np.float64) for j in range(3))
    colour = mean + spread * rng.standard_normal((n, 1))  # brighter or darker crops, same tint
    return np.clip(colour[:, None, None, :] + contrast[:, None, None, :] * texture, 0, 255)


def frost(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """The image dimmed and a frost layer added (c0 * x + c1 * frost). The layer is synthesized
    (`frost_layer`), not cut from the original's photos: CIFAR-10-C-like, not CIFAR-10-C."""
    keep, amount = ((1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45))[severity - 1]
    layer = frost_layer(rng, len(images), images.shape[1])
    return np.clip(keep * np.asarray(images, dtype=np.float64) + amount * layer, 0, 255).astype(np.uint8)


def fog(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """A plasma-fractal haze added, then rescaled to the image's own maximum."""
    amount, decay = ((0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75))[severity - 1]
    x = _float(images)
    n, size = x.shape[:2]
    top = x.max(axis=(1, 2, 3), keepdims=True)
    mapsize = 1 << max(5, math.ceil(math.log2(size)))  # the original: 32
    x = x + amount * _plasma_fractal(rng, n, mapsize, decay)[:, :size, :size, None]
    return _uint8(x * top / (top + amount))


# ---------------------------------------------------------------------------------------------
# Digital


def brightness(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """HSV value raised by c (clipped at 1). Hue and saturation unchanged means each pixel's RGB
    scales by v' / v (a black pixel becomes grey v'): skimage's rgb2hsv -> hsv2rgb round trip."""
    c = (0.05, 0.1, 0.15, 0.2, 0.3)[severity - 1]
    x = _float(images)
    v = x.max(axis=-1, keepdims=True)
    v_new = np.minimum(v + c, 1.0)
    out = np.where(v > 0, x * (v_new / np.where(v > 0, v, 1.0)), v_new)
    return _uint8(out)


def contrast(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Each channel pulled towards its mean by a factor c."""
    c = (0.75, 0.5, 0.4, 0.3, 0.15)[severity - 1]
    x = _float(images)
    means = x.mean(axis=(1, 2), keepdims=True)
    return _uint8((x - means) * c + means)


def elastic_transform(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """A random affine warp (three points moved by up to c2), then a smooth random displacement
    field (uniform noise, Gaussian-blurred with sigma c1, times c0); all in pixels of side S."""
    size = images.shape[1]
    params = ((0, 0, 0.08), (0.05, 0.2, 0.07), (0.08, 0.06, 0.06), (0.1, 0.04, 0.05), (0.1, 0.03, 0.03))
    alpha, sigma, affine = (p * size for p in params[severity - 1])  # the original's IMSIZE * c
    x = np.asarray(images, dtype=np.float32) / np.float32(255.0)
    n = len(x)
    center, square = size // 2, size // 3
    src = np.array([[center + square] * 2, [center + square, center - square], [center - square] * 2], np.float64)
    dst = src + rng.uniform(-affine, affine, size=(n, 3, 2))
    # cv2.getAffineTransform(src, dst): M (2 x 3) with M @ [x, y, 1] = dst; warpAffine samples src at M^-1 @ pixel
    m = np.linalg.solve(np.broadcast_to(np.c_[src, np.ones(3)], (n, 3, 3)), dst).transpose(0, 2, 1)
    inverse = np.linalg.inv(m[:, :, :2])
    grid_y, grid_x = np.mgrid[:size, :size].astype(np.float64)
    px, py = grid_x[None] - m[:, 0, 2, None, None], grid_y[None] - m[:, 1, 2, None, None]
    src_x = inverse[:, 0, 0, None, None] * px + inverse[:, 0, 1, None, None] * py
    src_y = inverse[:, 1, 0, None, None] * px + inverse[:, 1, 1, None, None] * py
    x = _bilinear(x, src_y, src_x, "reflect101")
    dx = _gaussian(rng.uniform(-1, 1, size=(n, size, size)), sigma, mode="symmetric", truncate=3) * alpha
    dy = _gaussian(rng.uniform(-1, 1, size=(n, size, size)), sigma, mode="symmetric", truncate=3) * alpha
    return _uint8(_bilinear(x, grid_y[None] + dy, grid_x[None] + dx, "symmetric"))


def pixelate(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """Box-downscaled to a share c of the side and box-upscaled back (Pillow, as the original)."""
    c = (0.95, 0.9, 0.85, 0.75, 0.65)[severity - 1]
    size = images.shape[1]
    small = (int(size * c), int(size * c))
    return _per_image_pil(images, lambda im: im.resize(small, Image.Resampling.BOX).resize((size, size),
                                                                                          Image.Resampling.BOX))  # fmt: skip


def _jpeg(image: Image.Image, quality: int) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)  # Pillow's default chroma subsampling: 4:2:0
    return Image.open(buffer)


def jpeg_compression(images: Batch, severity: int, rng: np.random.Generator) -> Batch:
    """JPEG-encoded at quality c with Pillow and decoded."""
    quality = (80, 65, 58, 50, 40)[severity - 1]
    return _per_image_pil(images, lambda im: _jpeg(im, quality))


# ---------------------------------------------------------------------------------------------
# Registry

CORRUPTIONS: dict[str, Callable[[Batch, int, np.random.Generator], Batch]] = {
    "gaussian_noise": gaussian_noise,
    "shot_noise": shot_noise,
    "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur,
    "glass_blur": glass_blur,
    "motion_blur": motion_blur,
    "zoom_blur": zoom_blur,
    "snow": snow,
    "frost": frost,
    "fog": fog,
    "brightness": brightness,
    "contrast": contrast,
    "elastic_transform": elastic_transform,
    "pixelate": pixelate,
    "jpeg_compression": jpeg_compression,
}
CATEGORIES = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur"),
    "weather": ("snow", "frost", "fog", "brightness"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression"),
}
# The ones that draw nothing at random: the same output for every seed.
DETERMINISTIC = ("defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression")


def check_names(names: Sequence[str] | None) -> list[str]:
    """The corruption names (all 15 in CIFAR-10-C's order when None). Raises ValueError for an
    unknown one, listing the known ones."""
    if names is None:
        return list(CORRUPTIONS)
    unknown = [n for n in names if n not in CORRUPTIONS]
    if unknown:
        raise ValueError(f"unknown corruption {', '.join(unknown)}: choose from {', '.join(CORRUPTIONS)}")
    return list(names)


def check_severities(severities: Sequence[int]) -> list[int]:
    """Sorted unique severities; raises ValueError unless each is 1 to 5."""
    bad = [s for s in severities if s not in SEVERITIES]
    if bad or not severities:
        raise ValueError(f"severities must be among 1, 2, 3, 4, 5, got {list(severities)}")
    return sorted(set(severities))


def corruption_rng(name: str, severity: int, seed: int = 0, stream: int = 0) -> np.random.Generator:
    """The generator of one (corruption, severity, seed): independent streams for each, so adding a
    corruption or reordering them changes no other one's images."""
    return np.random.default_rng([seed, zlib.crc32(name.encode()), severity, stream])


def corrupt(images: Batch, name: str, severity: int, seed: int = 0, stream: int = 0) -> Batch:
    """Apply one corruption at one severity (1-5) to uint8 images (N, S, S, 3).

    `stream` picks an independent random stream of the same seed (evaluation passes the index of
    each block of images). The same arguments always give the same output.

    Raises:
        ValueError: unknown name, a severity outside 1-5, or images that are not uint8 (N, S, S, 3).
    """
    check_names([name])
    check_severities([severity])
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(f"expected square uint8 RGB images (N, S, S, 3), got {images.dtype} {images.shape}")
    if images.shape[1] < 8:
        raise ValueError(f"images of {images.shape[1]} px are too small to corrupt (8 px at least)")
    if not len(images):
        return images.copy()
    out = CORRUPTIONS[name](images, severity, corruption_rng(name, severity, seed, stream))
    assert out.shape == images.shape and out.dtype == np.uint8, (name, out.shape, out.dtype)
    return out


def photo_pipeline(images: Batch, load: Callable[[bytes], np.ndarray] | None = None, upscale: int = 512,
                   quality: int = 70) -> Batch:  # fmt: skip
    """Each image as a phone would hand it over: upscaled to `upscale` px (bicubic: a photo of the
    object is far larger than 32 px), saved as JPEG at `quality` with 4:2:0 chroma subsampling,
    then decoded and resized back by `load` (default: `cifar_cnn.images.load_image` at the
    images' own size; evaluation passes `Classifier.load_image`, the resize path of `predict`)."""
    from cifar_cnn.images import load_image

    size = images.shape[1]
    load = load or (lambda data: load_image(data, size))

    def one(image: np.ndarray) -> np.ndarray:
        big = Image.fromarray(image).resize((upscale, upscale), Image.Resampling.BICUBIC)
        buffer = io.BytesIO()
        big.save(buffer, "JPEG", quality=quality, subsampling="4:2:0")
        return load(buffer.getvalue())

    return np.stack([one(image) for image in images]) if len(images) else np.asarray(images).copy()

"""Robust decoding of user images into what the model eats: uint8 RGB (32, 32, 3).

Any format Pillow reads (JPEG, PNG, WebP, GIF, BMP, TIFF...), any mode (RGBA and LA over white,
palette, grayscale, CMYK, 16-bit and float), EXIF orientation applied, the first frame of
animations. Limits on bytes and pixels keep a hostile file from exhausting memory.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from cifar_cnn.errors import ImageError

MAX_BYTES = 50 * 1024 * 1024  # 50 MiB of encoded image
MAX_PIXELS = 50_000_000  # about 8000 x 6000: every phone photo, no decompression bombs
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray


def open_image(source: ImageInput, *, name: str | None = None, max_bytes: int = MAX_BYTES,
               max_pixels: int = MAX_PIXELS) -> Image.Image:  # fmt: skip
    """Decode a path, raw bytes, PIL image or array into an RGB PIL image.

    Raises:
        ImageError: empty, truncated, not an image, too large, or an array of the wrong shape.
    """
    if isinstance(source, Image.Image):
        return _to_rgb(source)
    if isinstance(source, np.ndarray):
        return Image.fromarray(_array_to_uint8(source))
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        name = name or str(path)
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})", "missing") from exc
        if path.is_dir():
            raise ImageError(f"{name}: is a folder, not an image", "missing")
        if size > max_bytes:
            raise ImageError(
                f"{name}: file is {size / 2**20:.1f} MiB, over the {max_bytes / 2**20:.0f} MiB limit", "too_large"
            )
        source = path.read_bytes()
    name = name or "image"
    if not isinstance(source, (bytes, bytearray, memoryview)):
        raise ImageError(f"{name}: cannot read an image from a {type(source).__name__}", "unsupported")
    if len(source) == 0:
        raise ImageError(f"{name}: file is empty (0 bytes)", "empty")
    if len(source) > max_bytes:
        raise ImageError(
            f"{name}: {len(source) / 2**20:.1f} MiB is over the {max_bytes / 2**20:.0f} MiB limit", "too_large"
        )
    return _decode(bytes(source), name, max_pixels)


def _decode(data: bytes, name: str, max_pixels: int) -> Image.Image:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            w, h = image.size
            if w * h > max_pixels:
                raise ImageError(f"{name}: {w}x{h} pixels is over the limit of {max_pixels:,} pixels", "too_large")
            # JPEG can decode at 1/2, 1/4, 1/8 scale: far faster for big photos we shrink anyway.
            image.draft("RGB", (128, 128))
            image.load()
            image = ImageOps.exif_transpose(image)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(
            f"{name}: not an image file Pillow can read (JPEG, PNG, WebP, GIF, BMP, TIFF...)", "unsupported"
        ) from exc
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{name}: too many pixels, refused as a possible decompression bomb", "too_large") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{name}: the image data is damaged or truncated ({exc})") from exc
    return _to_rgb(image)


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
        image = Image.fromarray(np.clip(a / top * 255 + 0.5, 0, 255).astype(np.uint8), "L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)  # transparent -> white, as browsers show it
    return image.convert("RGB") if image.mode != "RGB" else image


def _array_to_uint8(a: np.ndarray) -> np.ndarray:
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    if a.ndim != 3 or a.shape[-1] not in (1, 3, 4):
        raise ImageError(f"array of shape {a.shape}: expected (H, W), (H, W, 3) or (H, W, 4)")
    if a.shape[-1] == 1:
        a = np.repeat(a, 3, axis=-1)
    if a.dtype == np.uint8:
        pass
    elif np.issubdtype(a.dtype, np.floating):
        if a.size and (np.nanmin(a) < 0 or np.nanmax(a) > 1):
            raise ImageError("float image arrays must hold values in [0, 1]")
        a = np.round(np.nan_to_num(a) * 255).astype(np.uint8)
    else:
        raise ImageError(f"array of dtype {a.dtype}: expected uint8 (0-255) or float (0-1)")
    if a.shape[-1] == 4:
        return np.asarray(_to_rgb(Image.fromarray(np.ascontiguousarray(a), "RGBA")))
    return np.ascontiguousarray(a)


def to_model_size(image: Image.Image, size: int = 32) -> np.ndarray:
    """Shorter side to `size` with antialiased bicubic resampling, then a center crop:
    uint8 (size, size, 3). A size x size image passes through unchanged, so CIFAR-10 images
    get exactly the pixels the model was trained on."""
    w, h = image.size
    if (w, h) != (size, size):
        scale = size / min(w, h)
        new = (max(size, round(w * scale)), max(size, round(h * scale)))
        image = image.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).copy()


def load_image(source: ImageInput, size: int = 32, **limits) -> np.ndarray:
    """Decode any supported input into uint8 (size, size, 3)."""
    return to_model_size(open_image(source, **limits), size)

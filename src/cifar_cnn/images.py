"""Robust decoding of user images into what the model eats: uint8 RGB (32, 32, 3).

Any format Pillow reads (JPEG, PNG, WebP, GIF, BMP, TIFF...), any mode (RGBA and LA over white,
palette, grayscale, CMYK, 16-bit and float), EXIF orientation applied, the first frame of
animations. Limits on bytes and pixels keep a hostile file from exhausting memory, and when the
caller only needs a small image (`target_size`), big images are shrunk while they are decoded:
JPEG through libjpeg's scaled decoding, PNG strip by strip, so a 50-megapixel PNG never sits in
memory whole. Every failure becomes an `ImageError` with a one-line message in plain words.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from cifar_cnn.errors import ImageError

MAX_BYTES = 50 * 1024 * 1024  # 50 MiB of encoded image
MAX_PIXELS = 50_000_000  # about 8000 x 6000: every phone photo, no decompression bombs
ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image

ImageInput = str | os.PathLike | bytes | Image.Image | np.ndarray

# With target_size, images are shrunk on decode so their shorter side stays >= KEEP * target_size:
# to_model_size then still does a proper antialiased bicubic resize from several times its output.
KEEP = 4
_STRIP_PIXELS = 1 << 20  # big images are converted and shrunk in strips of about this many pixels

_REFUSED = {  # formats Pillow recognises but would need external programs (or trust) to decode
    "EPS": "EPS/PostScript files are not supported",
    "WMF": "WMF/EMF vector images are not supported",
    "MPEG": "MPEG video files are not supported",
}
_GREY_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_ORIENTATION = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# 16-bit -> 8-bit, round(v * 255 / 65535) == round(v / 257), exact in integers: one table lookup.
_LUT16 = ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)
# PNGs decoded in strips: (bit depth, colour type) -> (mode, rawmode) whose unpacking copies bytes,
# so the last row of one strip can be fed back, unfiltered, as the "previous row" of the next.
_PNG_STRIPS = {(8, 0): "L", (8, 2): "RGB", (8, 3): "P", (8, 4): "LA", (8, 6): "RGBA", (16, 0): "I;16B"}
_PNG_BYTES_PER_PIXEL = {"L": 1, "P": 1, "LA": 2, "I;16B": 2, "RGB": 3, "RGBA": 4}


def open_image(source: ImageInput, *, name: str | None = None, max_bytes: int = MAX_BYTES,
               max_pixels: int = MAX_PIXELS, target_size: int | None = None) -> Image.Image:  # fmt: skip
    """Decode a path, raw bytes, PIL image or array into an RGB PIL image.

    Args:
        target_size: the caller will shrink the result to about this many pixels (as `to_model_size`
            does), so a big image may be decoded at reduced size: its shorter side is kept at
            `KEEP * target_size` or more. None keeps full resolution.

    Raises:
        ImageError: empty, truncated, damaged, not an image, unsupported, too large, or an array of
            the wrong shape. Its message is one line; its `kind` says which.
    """
    if name is not None and not name.isprintable():  # an uploaded file name may hold newlines
        name = "".join(c if c.isprintable() else "?" for c in name)
    if isinstance(source, Image.Image):
        try:
            return _to_rgb(source)
        except Exception as exc:
            raise _explain(exc, name or "image", source.format) from exc
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
        try:
            source = path.read_bytes()
        except OSError as exc:
            raise ImageError(f"{name}: cannot read file ({exc.strerror or exc})", "missing") from exc
    name = name or "image"
    if not isinstance(source, (bytes, bytearray, memoryview)):
        raise ImageError(f"{name}: cannot read an image from a {type(source).__name__}", "unsupported")
    if len(source) == 0:
        raise ImageError(f"{name}: file is empty (0 bytes)", "empty")
    if len(source) > max_bytes:
        raise ImageError(
            f"{name}: {len(source) / 2**20:.1f} MiB is over the {max_bytes / 2**20:.0f} MiB limit", "too_large"
        )
    return _decode(bytes(source), name, max_pixels, target_size)


def _decode(data: bytes, name: str, max_pixels: int, target_size: int | None) -> Image.Image:
    image = None
    try:
        image = Image.open(io.BytesIO(data))
        fmt = image.format
        if fmt in _REFUSED or isinstance(image, ImageFile.StubImageFile):
            raise ImageError(f"{name}: {_REFUSED.get(fmt) or f'{fmt} files are not supported'}", "unsupported")
        w, h = image.size
        if w <= 0 or h <= 0:
            raise ImageError(f"{name}: the {fmt} file declares an image of {w}x{h} pixels", "damaged")
        if w * h > max_pixels:
            raise ImageError(f"{name}: {w}x{h} pixels is over the limit of {max_pixels:,} pixels", "too_large")
        if Image.MAX_IMAGE_PIXELS and w * h > Image.MAX_IMAGE_PIXELS:
            raise ImageError(f"{name}: too many pixels, refused as a possible decompression bomb", "too_large")
        if target_size is None:
            image.load()
            return _orient(_to_rgb(image), image)
        keep = KEEP * target_size
        # JPEG decodes at 1/2, 1/4 or 1/8 scale: far faster and smaller for big photos we shrink anyway.
        image.draft("RGB", (keep, keep))
        factor = min(image.size) // keep
        if factor >= 2 and fmt == "PNG" and (strips := _png_strips(image, data, factor)) is not None:
            return _orient(_shrink(strips, image, factor), image)
        image.load()
        if factor < 2:
            return _orient(_to_rgb(image), image)
        if image.mode in ("RGB", "L"):  # box-averaging commutes with these conversions: shrink first
            return _orient(_to_rgb(image.reduce(factor)), image)
        return _orient(_shrink(_crops(image, factor), image, factor), image)
    except ImageError:
        raise
    except Exception as exc:  # Pillow and its plugins raise nearly anything on hostile files
        raise _explain(exc, name, image.format if image is not None else None, data) from exc


def _orient(rgb: Image.Image, source: Image.Image) -> Image.Image:
    """Apply the EXIF orientation of `source` to `rgb`. Broken EXIF data is ignored: the pixels are fine."""
    try:
        method = _ORIENTATION.get(source.getexif().get(0x0112, 1))
    except Exception:
        return rgb
    return rgb.transpose(method) if method is not None else rgb


def _strip_rows(width: int, factor: int = 1) -> int:
    """Rows per strip: a multiple of `factor`, about _STRIP_PIXELS pixels."""
    return factor * max(1, _STRIP_PIXELS // (factor * max(1, width)))


Strips = Iterator[tuple[int, Image.Image, int]]  # (first row, strip, rows to skip at the top of the strip)


def _shrink(strips: Strips, image: Image.Image, factor: int) -> Image.Image:
    """Convert each strip to RGB and box-average it `factor` times. Strips are a multiple of `factor` rows
    high, so the result is the same as reducing the whole converted image at once (for RGBA and LA, give or
    take a rounding: they are averaged with premultiplied alpha, then put over white)."""
    w, h = image.size
    out = Image.new("RGB", (-(-w // factor), -(-h // factor)))
    wide = _is_wide(image) if image.mode in ("I", "F") else None
    for y, strip, skip in strips:
        box = (0, skip, strip.width, strip.height)
        if strip.mode in ("RGBA", "LA"):  # Pillow averages these premultiplied: composite the small result
            small = _to_rgb(strip.reduce(factor, box))
        else:
            small = _to_rgb(strip, wide).reduce(factor, box)
        out.paste(small, (0, y // factor))
    return out


def _crops(image: Image.Image, factor: int) -> Strips:
    w, h = image.size
    rows = _strip_rows(w, factor)
    for y in range(0, h, rows):
        yield y, image.crop((0, y, w, min(h, y + rows))), 0


def _png_strips(image: Image.Image, data: bytes, factor: int) -> Strips | None:
    """Decode a big non-interlaced PNG strip by strip, never holding all its pixels: zlib inflates the
    rows of one strip, and Pillow's own PNG decoder unfilters them, primed with the previous strip's
    last row. None for the kinds of PNG this does not handle (Pillow decodes those whole)."""
    mode = _PNG_STRIPS.get((data[24], data[25]))  # IHDR bit depth and colour type
    tile = image.tile[0] if len(image.tile) == 1 else None
    if mode is None or image.mode != mode.replace("I;16B", "I;16") or data[28]:  # data[28]: interlaced
        return None
    if getattr(image, "n_frames", 1) != 1 or tile is None or tile[0] != "zip":
        return None
    if tuple(tile[1]) != (0, 0, *image.size):
        return None
    first_idat, pieces, palette, exif = _png_chunks(data)
    if first_idat != tile[2] or (mode == "P" and not palette):
        return None
    # _orient() calls getexif(), which for a PNG without "exif" in info would decode the whole image.
    image.info.setdefault("exif", exif or b"")
    return _png_strip_iter(image, mode, pieces, palette if mode == "P" else None, factor)


def _png_chunks(data: bytes) -> tuple[int | None, list[memoryview], bytes | None, bytes | None]:
    """Offset of the first IDAT's data, the run of IDAT data (as views of at most 64 KiB, so that zlib's
    unconsumed input stays small), PLTE and eXIf of a PNG."""
    view = memoryview(data)
    first_idat = palette = exif = None
    pieces: list[memoryview] = []
    in_idat = False
    pos, end = 8, len(data)
    while pos + 8 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        body = pos + 8
        stop = min(body + length, end)
        if kind == b"IDAT" and (first_idat is None or in_idat):
            first_idat = body if first_idat is None else first_idat
            in_idat = True
            pieces += [view[start : min(start + 65536, stop)] for start in range(body, stop, 65536)]
        else:
            in_idat = False
            if kind == b"PLTE" and first_idat is None:
                palette = data[body : body + length // 3 * 3]
            elif kind == b"eXIf" and exif is None:
                exif = data[body:stop]
            elif kind == b"IEND":
                break
        pos = body + length + 4
    return first_idat, pieces, palette, exif


def _png_strip_iter(image: Image.Image, mode: str, pieces: list[memoryview], palette: bytes | None,
                    factor: int) -> Strips:  # fmt: skip
    w, h = image.size
    stride = 1 + w * _PNG_BYTES_PER_PIXEL[mode]  # filter-type byte + pixels
    rows = _strip_rows(w, factor)
    inflate = zlib.decompressobj()
    source = iter(pieces)
    pending: bytes | memoryview = b""
    prev = bytes(stride)  # filter "none" and zeros: what PNG assumes above the first row
    for y in range(0, h, rows):
        n = min(rows, h - y)
        parts, got, need = [prev], 0, n * stride
        while got < need:
            if not pending:
                pending = next(source, b"")
                if not pending:
                    raise EOFError("PNG image data ends early")
            part = inflate.decompress(pending, need - got)
            pending = inflate.unconsumed_tail
            if not part and inflate.eof:
                raise EOFError("PNG image data ends early")
            parts.append(part)
            got += len(part)
        strip = Image.frombytes(mode, (w, n + 1), zlib.compress(b"".join(parts), 0), "zip", mode)
        if palette is not None:
            strip.putpalette(palette)
            if "transparency" in image.info:
                strip.info["transparency"] = image.info["transparency"]
        prev = b"\0" + strip.crop((0, n, w, n + 1)).tobytes()
        yield y, strip, 1


def _is_wide(image: Image.Image) -> bool:
    """Whether an "I" or "F" image holds values over 255 (then it is scaled from 0-65535, else 0-255)."""
    return bool(image.getextrema()[1] > 255)


def _to_rgb(image: Image.Image, wide: bool | None = None) -> Image.Image:
    if image.mode in _GREY_MODES:
        image = _grey_to_l(image, wide)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _ALPHA_MODES:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)  # transparent -> white, as browsers show it
    return image.convert("RGB") if image.mode != "RGB" else image


def _grey_to_l(image: Image.Image, wide: bool | None) -> Image.Image:
    """16-bit, 32-bit integer and float greyscale to 8 bits, in strips so a big image needs little memory."""
    w, h = image.size
    rows = _strip_rows(w)
    if h <= rows:
        return Image.fromarray(_grey_to_uint8(np.asarray(image), image.mode, wide))
    if wide is None and image.mode in ("I", "F"):
        wide = _is_wide(image)
    out = Image.new("L", image.size)
    for y in range(0, h, rows):
        a = np.asarray(image.crop((0, y, w, min(h, y + rows))))
        out.paste(Image.fromarray(_grey_to_uint8(a, image.mode, wide)), (0, y))
    return out


def _grey_to_uint8(a: np.ndarray, mode: str, wide: bool | None) -> np.ndarray:
    if mode.startswith("I;16"):
        return _LUT16[a]
    if wide is None:
        wide = bool(a.max(initial=0) > 255)
    if mode == "I":  # the same values as the float formula below, in integers
        return _LUT16[np.clip(a, 0, 65535)] if wide else np.clip(a, 0, 255).astype(np.uint8)
    top = 65535.0 if wide else 255.0
    return np.clip(a.astype(np.float64) / top * 255 + 0.5, 0, 255).astype(np.uint8)


def _explain(exc: Exception, name: str, fmt: str | None, data: bytes = b"") -> ImageError:
    """A one-line ImageError for anything Pillow raised, in plain words: its own messages are not for users."""
    if isinstance(exc, ImageError):
        return exc
    if isinstance(exc, UnidentifiedImageError):
        return _unidentified(name, data)
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageError(f"{name}: too many pixels, refused as a possible decompression bomb", "too_large")
    fmt = fmt or _plugin_format(exc)
    text = str(exc).lower()
    if isinstance(exc, MemoryError):
        return ImageError(f"{name}: not enough memory to decode this {fmt + ' ' if fmt else ''}image", "too_large")
    if "text chunk" in text or "decompressed data too large" in text:
        return ImageError(f"{name}: the file's metadata is too large", "too_large")
    if (
        isinstance(exc, NotImplementedError)
        or "not supported" in text
        or "unsupported" in text
        or ("decoder" in text and "not available" in text)
    ):
        what = f"this kind of {fmt} image" if fmt else "this kind of image"
        return ImageError(f"{name}: {what} is not supported; convert it to PNG or JPEG", "unsupported")
    return ImageError(f"{name}: the {fmt or 'image'} data is damaged or truncated", "damaged")


def _plugin_format(exc: BaseException) -> str | None:
    """The format of the Pillow image file object that raised `exc` (when Image.open itself failed)."""
    fmt, tb = None, exc.__traceback__
    while tb is not None:
        obj = tb.tb_frame.f_locals.get("self")
        if isinstance(obj, Image.Image) and isinstance(getattr(obj, "format", None), str):
            fmt = obj.format
        tb = tb.tb_next
    return fmt


def _unidentified(name: str, data: bytes) -> ImageError:
    head = data[:1024]
    ftyp = head[8 : 8 + int.from_bytes(head[:4], "big")] if head[4:8] == b"ftyp" else b""  # ISO media brands
    brand = next((b for b, tags in _BRANDS if any(t in ftyp for t in tags)), None)
    if brand == "AVIF" and _avif_supported():
        return ImageError(f"{name}: the AVIF data is damaged or truncated", "damaged")
    if brand is not None:
        return ImageError(f"{name}: {brand} images are not supported here; convert it to JPEG or PNG", "unsupported")
    if head.startswith(b"%PDF"):
        return ImageError(f"{name}: PDF documents are not supported; export the page as PNG or JPEG", "unsupported")
    if b"<svg" in head:
        return ImageError(f"{name}: SVG vector images are not supported; export it as PNG", "unsupported")
    return ImageError(f"{name}: not an image file Pillow can read (JPEG, PNG, WebP, GIF, BMP, TIFF...)", "unsupported")


_BRANDS = (
    ("AVIF", (b"avif", b"avis")),
    ("HEIC", (b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis")),
    ("HEIF", (b"mif1", b"msf1")),
)


def _avif_supported() -> bool:
    from PIL import features

    return bool(features.check_module("avif"))


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
        return np.asarray(_to_rgb(Image.fromarray(np.ascontiguousarray(a))))
    return np.ascontiguousarray(a)


def to_model_size(image: Image.Image, size: int = 32) -> np.ndarray:
    """Shorter side to `size` with antialiased bicubic resampling, then a center crop:
    uint8 (size, size, 3). A size x size image passes through unchanged, so CIFAR-10 images
    get exactly the pixels the model was trained on."""
    w, h = image.size
    if min(w, h) <= 0:
        raise ImageError(f"image of {w}x{h} pixels: nothing to resize", "empty")
    if (w, h) != (size, size):
        scale = size / min(w, h)
        new = (max(size, round(w * scale)), max(size, round(h * scale)))
        image = image.resize(new, Image.Resampling.BICUBIC, reducing_gap=3.0)
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
    return np.asarray(image, dtype=np.uint8).copy()


def load_image(source: ImageInput, size: int = 32, **limits) -> np.ndarray:
    """Decode any supported input into uint8 (size, size, 3), shrinking big images while decoding them
    (see `open_image`'s `target_size`)."""
    return to_model_size(open_image(source, **{"target_size": size, **limits}), size)

"""Seeded fuzzing of the image decoder: whatever the bytes, `load_image` returns uint8 (32, 32, 3) or
raises ImageError with a one-line message in plain words, never any other exception.

Every format Pillow can both write and read here gets a small valid file, then a fixed number of
seeded mutations: byte flips, truncations, inserted junk, deleted or repeated ranges and header fields
set to boundary values. A failure names the format and the mutation number; `mutate(sample, fmt, i)`
rebuilds the file.
"""

import io
import os
import random
import warnings

import numpy as np
import pytest
from PIL import Image

from cifar_cnn.errors import ImageError
from cifar_cnn.images import load_image, open_image, to_model_size

# Mutations per format: ~25 formats x 400 decodes of tiny files take about 10 s on 2 cores.
# CIFAR_CNN_FUZZ_MUTATIONS=20000 for a deeper run; the seeds of the first N stay the same.
MUTATIONS = int(os.environ.get("CIFAR_CNN_FUZZ_MUTATIONS", 400))
MAX_PIXELS = 1 << 20  # a mutated header may claim any size: keep each decode to milliseconds
KINDS = {"unsupported", "too_large", "damaged", "empty", "missing"}
# Pillow's own wording, which must not reach users
PILLOW_WORDS = ("ghostscript", "broken data stream", "decoder error", "text chunk", "max_text", "pixel format",
                "cannot identify", "error -", "struct", "index out of range", "object has no attribute")  # fmt: skip
BOUNDARY = (0, 1, 2, 0x7F, 0x80, 0xFF, 0x100, 0x7FFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)


def sample_image() -> Image.Image:
    a = np.random.default_rng(0).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    a[:10] //= 4  # some smooth area, so compressors have structure to use
    return Image.fromarray(a)


def encode_sample(fmt: str) -> bytes | None:
    """A small valid file in `fmt`, from RGB if the format can take it, else from P, L or 1; None if not writable."""
    image = sample_image()
    for mode in ("RGB", "P", "L", "1"):
        buf = io.BytesIO()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # e.g. "IM image format is deprecated"
                image.convert(mode).save(buf, fmt)
        except Exception:
            continue
        data = buf.getvalue()
        if 0 < len(data) <= 200_000:
            return data
    return None


def formats() -> list[str]:
    Image.init()
    return sorted(set(Image.SAVE) & set(Image.OPEN))


SAMPLES = {fmt: data for fmt in formats() if (data := encode_sample(fmt)) is not None}


def mutate(data: bytes, fmt: str, i: int) -> bytes:
    """Mutation `i` of `data`: one to three random edits, reproducible from (fmt, i)."""
    rng = random.Random(f"{fmt}/{i}")
    b = bytearray(data)
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        if not b:
            break
        head = min(len(b), 128)  # headers hold the fields that matter most
        op = rng.randrange(7)
        if op == 0:  # flip bits in a few bytes, mostly in the header
            for _ in range(rng.randint(1, 4)):
                p = rng.randrange(head) if rng.random() < 0.7 else rng.randrange(len(b))
                b[p] ^= rng.randint(1, 255)
        elif op == 1:  # truncate
            del b[rng.choice((rng.randrange(1, 17), rng.randrange(len(b)))) :]
        elif op == 2:  # insert junk
            p = rng.randrange(len(b) + 1)
            b[p:p] = rng.randbytes(rng.randint(1, 64))
        elif op == 3:  # set a header field to a boundary value
            width = rng.choice((1, 2, 4))
            p = rng.randrange(max(1, head - width + 1))
            value = rng.choice(BOUNDARY) & ((1 << (8 * width)) - 1)
            b[p : p + width] = value.to_bytes(width, rng.choice(("little", "big")))
        elif op == 4:  # delete a range
            p = rng.randrange(len(b))
            del b[p : p + rng.randint(1, 256)]
        elif op == 5:  # repeat a range
            p = rng.randrange(len(b))
            b[p:p] = b[p : p + rng.randint(1, 256)] * rng.randint(1, 8)
        else:  # zero a range of the body
            p, n = rng.randrange(len(b)), rng.randint(1, 64)
            b[p : p + n] = bytes(len(b[p : p + n]))
    return bytes(b)


def check(data: bytes, full_resolution: bool = False) -> None:
    try:
        if full_resolution:
            out = to_model_size(open_image(data, max_pixels=MAX_PIXELS))
        else:
            out = load_image(data, max_pixels=MAX_PIXELS)
    except ImageError as exc:
        message = str(exc)
        assert exc.kind in KINDS, exc.kind
        assert message.startswith("image: ") and "\n" not in message and "\r" not in message, message
        assert not any(word in message.lower() for word in PILLOW_WORDS), message
    else:
        assert isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.shape == (32, 32, 3)


def test_formats_found():
    assert {"PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "ICO", "PPM", "TGA", "DDS"} <= set(SAMPLES)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("fmt", sorted(SAMPLES))
def test_mutated_files_decode_or_raise_image_error(fmt):
    data = SAMPLES[fmt]
    check(data)  # the unmutated file
    for i in range(MUTATIONS):
        mutated = mutate(data, fmt, i)
        try:
            check(mutated, full_resolution=i % 4 == 3)
        except Exception as exc:
            raise AssertionError(f"{fmt} mutation {i} ({len(mutated)} bytes): {type(exc).__name__}: {exc}") from exc


def big_png(mode: str) -> bytes:
    """A PNG big enough (300 x 280) to be decoded in strips for size 32."""
    rng = np.random.default_rng(1)
    a = rng.integers(0, 256, (280, 300, 4), dtype=np.uint8)
    a[:, :150] = np.arange(150, dtype=np.uint8)[None, :, None]
    image = {
        "RGBA": Image.fromarray(a),
        "RGB": Image.fromarray(a[..., :3]),
        "P": Image.fromarray(a[..., :3]).quantize(64),
        "I;16": Image.fromarray(a[..., 0].astype(np.uint16) * 257),
    }[mode]
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("mode", ["RGBA", "RGB", "P", "I;16"])
def test_mutated_big_pngs_decoded_in_strips(mode):
    data = big_png(mode)
    check(data)
    for i in range(MUTATIONS // 4):
        mutated = mutate(data, f"big-{mode}", i)
        try:
            check(mutated)
        except Exception as exc:
            raise AssertionError(f"big {mode} PNG mutation {i}: {type(exc).__name__}: {exc}") from exc

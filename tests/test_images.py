"""Odd user images: every mode and format, damaged files, hostile sizes."""

import io

import numpy as np
import pytest
from PIL import Image

from cifar_cnn.errors import ImageError
from cifar_cnn.images import load_image, open_image
from helpers import encode, png_header_only


def gradient(w=64, h=48) -> Image.Image:
    x = np.linspace(0, 255, w, dtype=np.uint8)
    a = np.stack([np.tile(x, (h, 1)), np.tile(x[::-1], (h, 1)), np.full((h, w), 128, np.uint8)], -1)
    return Image.fromarray(a)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"])
def test_formats_decode_to_model_size(fmt):
    out = load_image(encode(gradient(), fmt))
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8


@pytest.mark.parametrize("mode", ["RGBA", "LA", "L", "P", "CMYK", "1", "I", "F"])
def test_modes(mode):
    image = gradient().convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode in ("I", "F") else "PNG"
    assert load_image(encode(image, fmt)).shape == (32, 32, 3)


def test_transparent_pixels_become_white():
    image = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    assert (load_image(encode(image, "PNG")) == 255).all()


def test_16_bit_png_keeps_its_brightness():
    a = np.full((40, 40), 65535 // 2, dtype=np.uint16)
    image = Image.fromarray(a)
    assert image.mode.startswith("I;16")
    out = load_image(encode(image, "PNG"))
    assert abs(int(out.mean()) - 128) <= 2  # not clipped to white, not 1/256 as dark


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (64, 32), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 32, 32))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    out = open_image(encode(image, "JPEG", exif=exif, quality=95))
    assert out.size == (32, 64)
    assert np.asarray(out)[:16].mean() > 200  # the white half is now on top


def test_animated_gif_uses_first_frame():
    frames = [Image.new("RGB", (40, 40), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)
    out = load_image(buf.getvalue())
    assert out[..., 0].mean() > 200 and out[..., 2].mean() < 50


def test_cifar_sized_image_passes_through_unchanged():
    a = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(load_image(encode(Image.fromarray(a), "PNG")), a)
    np.testing.assert_array_equal(load_image(a), a)


def test_non_square_is_center_cropped():
    image = Image.new("RGB", (300, 100), (0, 0, 255))
    image.paste((255, 0, 0), (100, 0, 200, 100))  # red center third
    out = load_image(encode(image, "PNG"))
    assert out[:, 8:24, 0].mean() > 240 and out[:, 8:24, 2].mean() < 15


def test_zero_bytes(tmp_path):
    f = tmp_path / "empty.jpg"
    f.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(f)


def test_truncated_jpeg():
    data = encode(gradient(256, 256), "JPEG")
    with pytest.raises(ImageError, match="damaged or truncated"):
        load_image(data[: len(data) // 2])


def test_text_renamed_png(tmp_path):
    f = tmp_path / "notes.png"
    f.write_text("just some text, not an image")
    with pytest.raises(ImageError, match="not an image"):
        load_image(f)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageError, match="cannot read"):
        load_image(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="folder"):
        load_image(tmp_path)


def test_huge_pixel_count_is_refused():
    with pytest.raises(ImageError, match="pixels"):
        load_image(png_header_only(20000, 20000))


def test_byte_limit():
    with pytest.raises(ImageError, match="limit"):
        load_image(encode(gradient(), "PNG"), max_bytes=100)


@pytest.mark.parametrize(
    "array, ok",
    [
        (np.zeros((10, 10), np.uint8), True),
        (np.zeros((10, 10, 4), np.uint8), True),
        (np.ones((10, 10, 3), np.float32), True),
        (np.full((10, 10, 3), 3.0), False),
        (np.zeros((10, 10, 5), np.uint8), False),
        (np.zeros((10, 10, 3), np.int64), False),
    ],
)
def test_arrays(array, ok):
    if ok:
        assert load_image(array).shape == (32, 32, 3)
    else:
        with pytest.raises(ImageError):
            load_image(array)

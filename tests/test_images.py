"""Odd user images: every mode and format, damaged files, hostile sizes."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import EpsImagePlugin, Image, PngImagePlugin

from cifar_cnn import images
from cifar_cnn.errors import ImageError
from cifar_cnn.images import load_image, open_image, to_model_size
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


def test_zero_sized_arrays_are_refused():
    with pytest.raises(ImageError, match="nothing to resize"):
        load_image(np.zeros((0, 5, 3), np.uint8))


# --- Big images are shrunk while they are decoded -------------------------------------------------


def noisy(w, h, seed=0) -> np.ndarray:
    """Gradients with 30% noise: every PNG row filter gets used, and resizing has detail to lose."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = ((xx * 255 // w) ^ (yy % 64)).astype(np.uint8)
    mix = np.where(rng.random((h, w)) < 0.3, rng.integers(0, 256, (h, w), dtype=np.uint8), base)
    return np.stack([mix, base, 255 - mix, (xx + yy).astype(np.uint8)], -1)


def big_png_images(w=700, h=520) -> dict[str, Image.Image]:
    a = noisy(w, h)
    pal = Image.fromarray(a[..., :3]).quantize(200)
    pal_alpha = pal.copy()
    pal_alpha.info["transparency"] = bytes(range(0, 256, 2))
    grey16 = (a[..., 0].astype(np.uint16) * 257 + a[..., 1] // 2).astype(np.uint16)
    return {
        "L": Image.fromarray(a[..., 0]),
        "RGB": Image.fromarray(a[..., :3]),
        "RGBA": Image.fromarray(a),
        "LA": Image.merge("LA", [Image.fromarray(a[..., i]) for i in (0, 3)]),
        "P": pal,
        "P+alpha": pal_alpha,
        "I;16": Image.fromarray(grey16),
        "1-bit": Image.fromarray(a[..., 0]).convert("1"),  # not streamed: decoded whole, then reduced
    }


def png_bytes(image: Image.Image, **kw) -> bytes:
    if "transparency" in image.info:
        kw["transparency"] = image.info["transparency"]
    return encode(image, "PNG", **kw)


@pytest.mark.parametrize("kind", ["L", "RGB", "RGBA", "LA", "P", "P+alpha", "I;16", "1-bit"])
def test_big_png_in_strips_equals_reducing_the_full_image(kind, monkeypatch):
    monkeypatch.setattr(images, "_STRIP_PIXELS", 5000)  # many strips of a few rows
    data = png_bytes(big_png_images()[kind])
    full = open_image(data)  # target_size=None: full resolution
    for size in (32, 64):
        small = open_image(data, target_size=size)
        factor = min(full.size) // (images.KEEP * size)
        assert factor >= 2 and min(small.size) >= images.KEEP * size
        ref = np.asarray(full.reduce(factor), int)
        diff = np.abs(np.asarray(small, int) - ref)
        assert diff.max() <= (2 if kind in ("RGBA", "LA") else 0)  # alpha is averaged premultiplied
        model = load_image(data, size).astype(int)
        assert np.abs(model - to_model_size(full, size)).mean() < 1.5


@pytest.mark.parametrize("kind", ["L", "RGB", "RGBA", "LA", "P", "P+alpha", "I;16"])
def test_big_png_is_streamed_not_decoded_whole(kind, monkeypatch):
    data = png_bytes(big_png_images()[kind])
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: pytest.fail("decoded whole"))
    assert load_image(data).shape == (32, 32, 3)


@pytest.mark.parametrize("where", ["before IDAT", "after IDAT"])
def test_big_png_orientation_is_applied(where):
    image = Image.new("RGB", (600, 300), (0, 0, 0))
    image.paste((255, 255, 255), (0, 0, 300, 300))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    data = encode(image, "PNG", exif=exif.tobytes())
    if where == "after IDAT":
        start = data.index(b"eXIf") - 4
        end = start + 12 + int.from_bytes(data[start : start + 4], "big")
        chunk, data = data[start:end], data[:start] + data[end:]
        iend = data.index(b"IEND") - 4
        data = data[:iend] + chunk + data[iend:]
    out = open_image(data, target_size=32)
    assert out.height > out.width
    assert np.asarray(out)[: out.height // 2 - 2].mean() > 200  # the white half is now on top


def test_truncated_big_png():
    data = png_bytes(big_png_images()["RGB"])
    with pytest.raises(ImageError, match="PNG data is damaged or truncated") as err:
        load_image(data[: len(data) * 2 // 3])
    assert err.value.kind == "damaged"


def test_big_16_bit_png_keeps_its_brightness():
    image = Image.fromarray(np.full((600, 700), 65535 // 2, dtype=np.uint16))
    out = load_image(encode(image, "PNG"))
    assert abs(int(out.mean()) - 128) <= 1


def test_big_jpeg_and_tiff_are_reduced_close_to_full_resolution():
    a = noisy(1400, 1000)[..., :3]
    for data in (encode(Image.fromarray(a), "JPEG", quality=95), encode(Image.fromarray(a).convert("RGBA"), "TIFF")):
        small = open_image(data, target_size=32)
        assert 128 <= min(small.size) < 256
        full = open_image(data)
        assert full.size == (1400, 1000)
        assert np.abs(load_image(data).astype(int) - to_model_size(full)).mean() < 1.5


def test_grey_conversions_are_exact():
    v16 = np.array([[0, 128, 129, 385, 386, 32767, 65407, 65408, 65535]], np.uint16)
    expected = np.floor(v16 / 65535 * 255 + 0.5).astype(np.uint8)
    for image in (Image.fromarray(v16), Image.fromarray(v16.astype(np.int32))):
        assert np.array_equal(np.asarray(open_image(image))[..., 0], expected)
    small = np.array([[-5, 0, 100, 255, 300]], np.int32)  # max > 255: scaled as 16-bit, clipped
    assert np.asarray(open_image(Image.fromarray(small)))[0, :, 0].tolist() == [0, 0, 0, 1, 1]
    f = np.array([[0.0, 0.5, 100.4, 255.0]], np.float32)
    assert np.asarray(open_image(Image.fromarray(f)))[0, :, 0].tolist() == [0, 1, 100, 255]


# --- Every failure is an ImageError with a one-line message in plain words ------------------------


def assert_plain(err: ImageError, *, words: str, kind: str | set[str], hidden: str = ""):
    message = str(err)
    assert "\n" not in message and "\r" not in message
    assert words in message, message
    assert err.kind in ({kind} if isinstance(kind, str) else kind), (err.kind, message)
    if hidden:
        assert hidden.lower() not in message.lower(), message


def dds() -> bytearray:
    return bytearray(encode(gradient(20, 24), "DDS"))


@pytest.mark.parametrize(
    "offset, value, pillow_says",
    [
        (80, 0, "Unknown pixel format flags 0"),
        (80, 2, "Unknown pixel format flags 2"),
        (80, 4, "Unimplemented pixel format"),  # a FourCC flag with FourCC 0
    ],
)
def test_malformed_dds(offset, value, pillow_says):
    data = dds()
    data[offset : offset + 4] = value.to_bytes(4, "little")
    with pytest.raises(ImageError) as err:
        load_image(bytes(data))
    assert_plain(err.value, words="DDS", kind="unsupported", hidden=pillow_says)


def test_truncated_dds():
    with pytest.raises(ImageError) as err:
        load_image(bytes(dds()[:200]))
    assert_plain(err.value, words="DDS data is damaged or truncated", kind="damaged")


@pytest.mark.parametrize(
    "version, offset, value, pillow_says",
    [
        ("BLP2", 4, 4, "Unknown BLP compression"),
        ("BLP2", 8, 0, "Unknown BLP encoding"),
        ("BLP1", 20, 1, "Unsupported BLP encoding"),
    ],
)
def test_malformed_blp(version, offset, value, pillow_says):
    data = bytearray(encode(gradient(20, 24).convert("P"), "BLP", blp_version=version))
    data[offset] = value
    with pytest.raises(ImageError) as err:
        load_image(bytes(data))
    assert_plain(err.value, words="BLP", kind="unsupported", hidden=pillow_says)


AVIF_HEADER = b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf"


@pytest.mark.parametrize("how", ["header only", "header and junk", "truncated", "zeroed image data"])
def test_malformed_avif(how):
    if how in ("truncated", "zeroed image data"):
        try:
            data = bytearray(encode(gradient(), "AVIF"))
        except (KeyError, OSError, ValueError):
            pytest.skip("this Pillow cannot write AVIF")
        if how == "truncated":
            data = data[: len(data) * 3 // 4]
        else:
            mdat = data.index(b"mdat") + 4
            data[mdat + 8 :] = bytes(len(data) - mdat - 8)
    else:
        data = AVIF_HEADER + (b"\x00\x01junk" * 50 if how == "header and junk" else b"")
    with pytest.raises(ImageError) as err:
        load_image(bytes(data))
    assert_plain(err.value, words="AVIF", kind={"damaged", "unsupported"}, hidden="Failed to decode")


def test_heic_is_named_as_unsupported():
    with pytest.raises(ImageError) as err:
        load_image(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(100))
    assert_plain(err.value, words="HEIC images are not supported", kind="unsupported")


def test_eps_is_refused_without_running_ghostscript(monkeypatch):
    monkeypatch.setattr(EpsImagePlugin, "gs_binary", None)  # would say "Unable to locate Ghostscript"
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "load", lambda self, *a, **k: pytest.fail("EPS was rendered"))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 16 16\nnewpath 0 0 moveto 16 16 lineto stroke\n%%EOF\n"
    with pytest.raises(ImageError) as err:
        load_image(eps)
    assert_plain(err.value, words="EPS/PostScript files are not supported", kind="unsupported", hidden="Ghostscript")


def png_with_chunks(*chunks: tuple[bytes, bytes], data: bytes | None = None) -> bytes:
    """A PNG (by default a small gradient) with extra chunks just before its first IDAT."""
    data = data or encode(gradient(), "PNG")
    idat = data.index(b"IDAT") - 4
    extra = b"".join(struct.pack(">I", len(d)) + k + d + struct.pack(">I", zlib.crc32(k + d)) for k, d in chunks)
    return data[:idat] + extra + data[idat:]


def test_big_rgb_png_with_a_suggested_palette():
    data = png_bytes(big_png_images()["RGB"])
    with_plte = png_with_chunks((b"PLTE", bytes(range(48))), data=data)
    assert open_image(with_plte).mode == "RGB"
    np.testing.assert_array_equal(load_image(with_plte), load_image(data))


def test_png_text_chunk_bomb():
    bomb = b"Comment\0\0" + zlib.compress(bytes(5_000_000), 9)  # 5 MB of text from 5 KB
    with pytest.raises(ImageError) as err:
        load_image(png_with_chunks((b"zTXt", bomb)))
    assert_plain(err.value, words="metadata is too large", kind="too_large", hidden="MAX_TEXT_CHUNK")


def test_png_too_much_text():
    chunk = (b"zTXt", b"Comment\0\0" + zlib.compress(bytes(1_000_000), 9))
    with pytest.raises(ImageError) as err:
        load_image(png_with_chunks(*[chunk] * 70))  # 70 MB of text in all
    assert_plain(err.value, words="metadata is too large", kind="too_large", hidden="text chunks")


def test_unconvertible_colour_mode_is_unsupported():
    with pytest.raises(ImageError) as err:
        open_image(Image.new("La", (8, 8)))  # premultiplied alpha: Pillow cannot convert it to RGBA
    assert_plain(err.value, words="not supported", kind="unsupported")


def test_damaged_png_names_the_format_and_hides_pillow():
    data = bytearray(encode(gradient(), "PNG"))
    idat = data.index(b"IDAT") + 4
    data[idat + 2 : idat + 40] = bytes(38)
    with pytest.raises(ImageError) as err:
        load_image(bytes(data))
    assert_plain(err.value, words="the PNG data is damaged or truncated", kind="damaged", hidden="broken data stream")


def test_file_name_with_newlines_gives_one_line_message():
    with pytest.raises(ImageError) as err:
        load_image(b"not an image", name="evil\nname\r\u2028.png")
    assert_plain(err.value, words="evil?name??.png: not an image", kind="unsupported")


def test_unexpected_exceptions_become_image_errors(monkeypatch):
    def boom(*args, **kwargs):
        raise ZeroDivisionError("division by zero")

    data = encode(gradient(), "PNG")
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", boom)
    with pytest.raises(ImageError) as err:
        load_image(data)
    assert_plain(err.value, words="PNG data is damaged", kind="damaged", hidden="division")
    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", lambda self: (_ for _ in ()).throw(MemoryError()))
    with pytest.raises(ImageError) as err:
        load_image(data)
    assert_plain(err.value, words="not enough memory", kind="too_large")


@pytest.mark.parametrize(
    "data, words",
    [
        (b"\xd7\xcd\xc6\x9a\x00\x00" + struct.pack("<hhhhH", 0, 0, 100, 100, 1440) + bytes(6) + b"\x01\x00\t\x00"
         + bytes(40), "WMF/EMF vector images are not supported"),
        (b"\x01\x00\x00\x00\x6c\x00\x00\x00" + struct.pack("<8i", 0, 0, 100, 100, 0, 0, 1000, 1000) + b" EMF"
         + bytes(80), "WMF/EMF vector images are not supported"),
        (b"\x00\x00\x01\xb3\x14\x01\x80" + bytes(64), "MPEG video files are not supported"),
        (b"BUFR" + bytes(100), "BUFR files are not supported"),
        (b"GRIB\x00\x00\x00\x01" + bytes(100), "GRIB files are not supported"),
        (b"\x89HDF\r\n\x1a\n" + bytes(100), "HDF5 files are not supported"),
        (b"%PDF-1.4\n" + bytes(100), "PDF documents are not supported"),
        (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"/>', "SVG vector images are not supported"),
    ],
)  # fmt: skip
def test_formats_pillow_recognises_but_cannot_decode(data, words):
    with pytest.raises(ImageError) as err:
        load_image(data)
    assert_plain(err.value, words=words, kind="unsupported")

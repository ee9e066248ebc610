import numpy as np
import torch
from PIL import Image

from cifar_cnn.images import load_image
from cifar_cnn.preprocess import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    batch_blur,
    batch_color_jitter,
    batch_cutout,
    batch_flip,
    batch_noise,
    batch_patch_shuffle,
    batch_translate,
    reflect_pad,
    to_tensor,
)


def test_normalization_and_layout():
    images = np.zeros((2, 32, 32, 3), np.uint8)
    images[..., 0] = 255
    x = to_tensor(images)
    assert x.shape == (2, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(x[0, 0], torch.full((32, 32), (1 - CIFAR10_MEAN[0]) / CIFAR10_STD[0]))
    assert torch.allclose(x[0, 1], torch.full((32, 32), -CIFAR10_MEAN[1] / CIFAR10_STD[1]))


def test_prediction_preprocessing_equals_training(tmp_path, real_data):
    """A CIFAR-10 test image saved as PNG and read back through the prediction path gives
    exactly the tensor that training and evaluation compute from the arrays."""
    _, (x_test, _) = real_data
    paths = []
    for i in range(8):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(x_test[i]).save(paths[-1])
    from_files = to_tensor(np.stack([load_image(p) for p in paths]))
    from_arrays = to_tensor(x_test[:8])
    assert torch.equal(from_files, from_arrays)


def test_classifier_uses_the_same_preprocessing(tmp_path, real_data):
    from cifar_cnn.models import create_model
    from cifar_cnn.predict import Classifier

    _, (x_test, _) = real_data
    meta = {"model": "fast", "classes": list("abcdefghij"), "mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD),
            "input_size": [3, 32, 32]}  # fmt: skip
    clf = Classifier(create_model("fast"), meta)
    assert torch.equal(clf.preprocess(x_test[:4]), to_tensor(x_test[:4]))


def test_translate_moves_content_by_at_most_r():
    x = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).view(2, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    out = batch_translate(reflect_pad(x, 2), 32, g)
    assert out.shape == x.shape
    for i in range(2):
        center = out[i, :, 16, 16]
        found = [
            (dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(x[i, :, 16 + dy, 16 + dx], center)
        ]
        assert len(found) == 1


def test_flip_mirrors_about_half():
    x = torch.randn(1000, 3, 8, 8)
    out = batch_flip(x, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).flatten(1).all(1)
    same = (out == x).flatten(1).all(1)
    assert (flipped | same).all() and 400 < flipped.sum() < 600


def test_cutout_zeroes_one_square_inside_each_image():
    x = torch.rand(200, 3, 32, 32) + 1  # no zeros of its own
    out = batch_cutout(x, 12, torch.Generator().manual_seed(0))
    zero = out[:, 0] == 0
    assert (zero == (out == 0).all(1)).all()  # the same pixels in every channel
    assert (zero.sum((1, 2)) == 144).all()  # a 12x12 square, never clipped by the border
    rows, cols = zero.any(2), zero.any(1)
    assert (rows.sum(1) == 12).all() and (cols.sum(1) == 12).all()
    assert torch.equal(out[~zero.unsqueeze(1).expand_as(out)], x[~zero.unsqueeze(1).expand_as(x)])
    corners = rows.float().argmax(1)
    assert corners.min() == 0 and corners.max() == 20  # every position can be drawn
    again = batch_cutout(x, 12, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)


def normalized_batch(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(uint8-valued pixels in [0, 1], the same normalized as training sees them)."""
    pixels = torch.randint(0, 256, (n, 32, 32, 3), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)
    return pixels.permute(0, 3, 1, 2).float() / 255, to_tensor(pixels.numpy())


def to_pixels(x: torch.Tensor) -> torch.Tensor:
    return x * torch.tensor(CIFAR10_STD).view(1, 3, 1, 1) + torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)


def test_color_jitter_stays_in_range_and_is_seeded():
    pixels, x = normalized_batch()
    out = batch_color_jitter(x, 0.3, CIFAR10_MEAN, CIFAR10_STD, torch.Generator().manual_seed(1))
    again = batch_color_jitter(x, 0.3, CIFAR10_MEAN, CIFAR10_STD, torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and out.shape == x.shape and out.is_contiguous(memory_format=torch.channels_last)
    p = to_pixels(out)
    assert p.min() >= -1e-5 and p.max() <= 1 + 1e-5  # clamped to real pixel values
    changed = (p - pixels).abs().flatten(1).mean(1)
    assert (changed > 1e-3).float().mean() > 0.9  # nearly every image altered
    none = batch_color_jitter(x, 0.0, CIFAR10_MEAN, CIFAR10_STD, torch.Generator().manual_seed(1))
    torch.testing.assert_close(none, x, atol=1e-5, rtol=0)  # strength 0: the identity
    # brightness, contrast and saturation only: a grey image stays grey
    grey = to_tensor(np.full((4, 32, 32, 3), 128, np.uint8))
    g = to_pixels(batch_color_jitter(grey, 0.3, CIFAR10_MEAN, CIFAR10_STD, torch.Generator().manual_seed(2)))
    assert torch.allclose(g[:, 0], g[:, 1], atol=1e-5) and torch.allclose(g[:, 1], g[:, 2], atol=1e-5)


def test_noise_touches_the_chosen_fraction_within_range():
    pixels, x = normalized_batch(400)
    out = to_pixels(batch_noise(x, 0.25, CIFAR10_MEAN, CIFAR10_STD, torch.Generator().manual_seed(0)))
    noisy = (out - pixels).abs().flatten(1).amax(1) > 1e-4
    assert 60 < noisy.sum() < 140  # about a quarter
    assert out.min() >= -1e-5 and out.max() <= 1 + 1e-5
    spread = (out - pixels)[noisy].flatten(1).std(1)
    assert spread.max() < 0.11  # sigma at most 0.1 of the pixel range (less where clamped)
    torch.testing.assert_close(batch_noise(x, 0.0, CIFAR10_MEAN, CIFAR10_STD, torch.Generator()), x, atol=1e-5, rtol=0)


def test_blur_smooths_the_chosen_images():
    _, x = normalized_batch(200)
    out = batch_blur(x, 0.5, torch.Generator().manual_seed(0))

    def roughness(t):  # mean absolute difference of neighbouring pixels
        return (t[..., 1:] - t[..., :-1]).abs().flatten(1).mean(1)

    blurred = ~torch.isclose(out, x).flatten(1).all(1)
    assert 60 < blurred.sum() < 140
    assert (roughness(out[blurred]) < 0.6 * roughness(x[blurred])).all()
    assert torch.equal(out[~blurred], x[~blurred])
    flat = torch.full((2, 3, 32, 32), 0.7)
    torch.testing.assert_close(batch_blur(flat, 1.0, torch.Generator()), flat)  # a flat image stays flat


def test_patch_shuffle_deals_out_the_batchs_own_patches():
    x = torch.arange(6 * 3 * 32 * 32, dtype=torch.float32).view(6, 3, 32, 32)  # every pixel value unique
    out = batch_patch_shuffle(x, 4, torch.Generator().manual_seed(0))
    assert torch.equal(out, batch_patch_shuffle(x, 4, torch.Generator().manual_seed(0)))  # seeded
    assert out.shape == x.shape and out.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(out.flatten().sort().values, x.flatten().sort().values)  # the same pixels, rearranged
    patches = out.view(6, 3, 4, 8, 4, 8).permute(0, 2, 4, 1, 3, 5).reshape(-1, 3, 8, 8)
    sources = (patches[:, 0, 0, 0] // (3 * 32 * 32)).long()  # the image each 8x8 patch came from
    assert all(len(set(sources[i * 16 : (i + 1) * 16].tolist())) > 1 for i in range(6))  # mosaics of several
    top_left = x.view(6, 3, 4, 8, 4, 8).permute(0, 2, 4, 1, 3, 5).reshape(-1, 3, 8, 8)
    assert all((top_left == patch).all((1, 2, 3)).any() for patch in patches)  # each patch whole, intact


def test_resize_downscales_without_aliasing_and_keeps_full_size_untouched():
    from cifar_cnn.preprocess import batch_resize

    stripes = torch.zeros(2, 3, 32, 32)
    stripes[..., ::2] = 1.0  # the finest pattern a 32 px image holds
    small = batch_resize(stripes, 24)
    assert small.shape == (2, 3, 24, 24) and small.is_contiguous(memory_format=torch.channels_last)
    # Antialiased: pulled towards grey (0.20 off at most; plain bilinear 0.33, nearest 0.5 = stripes kept).
    assert (small - 0.5).abs().max() < 0.25
    assert (batch_resize(stripes, 16) - 0.5).abs().max() < 0.1
    assert batch_resize(stripes, 32) is stripes
    half = batch_resize(stripes.to(torch.bfloat16), 16)
    assert half.dtype == torch.bfloat16

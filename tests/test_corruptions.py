"""CIFAR-10-C corruptions (corruptions.py), the photo pipeline, and robustness evaluation with its cache."""

import colorsys
import dataclasses
import itertools
import json

import numpy as np
import pytest
import torch

from cifar_cnn import corruptions
from cifar_cnn.cli import main
from cifar_cnn.corruptions import CATEGORIES, CORRUPTIONS, DETERMINISTIC, corrupt, photo_pipeline
from cifar_cnn.evaluate import corruption_accuracy
from cifar_cnn.predict import load

NAMES = list(CORRUPTIONS)
# Where more severity must mean more damage (mean |corrupted - clean| grows with each step).
MONOTONE = ("gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "zoom_blur", "fog", "brightness",
            "contrast", "pixelate")  # fmt: skip


def photo_like(n: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    """Smooth mid-tone images with an object and some texture: uint8 (n, size, size, 3)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[:size, :size] / size
    images = []
    for _ in range(n):
        slope = rng.uniform(-1, 1, (2, 3))
        base = rng.uniform(60, 180, 3) + 50 * (x[..., None] * slope[0] + y[..., None] * slope[1])
        (cy, cx), r = rng.uniform(0.3, 0.7, 2), rng.uniform(0.15, 0.3)
        blob = ((y - cy) ** 2 + (x - cx) ** 2 < r**2)[..., None]
        image = np.where(blob, rng.uniform(20, 235, 3), base) + rng.normal(0, 6, (size, size, 3))
        images.append(np.clip(image, 0, 255).astype(np.uint8))
    return np.stack(images)


IMAGES = photo_like()


def damage(out: np.ndarray, clean: np.ndarray) -> float:
    return float(np.abs(out.astype(np.int16) - clean).mean())


def test_the_fifteen_of_cifar10c_in_four_categories():
    assert len(CORRUPTIONS) == 15
    assert sorted(n for names in CATEGORIES.values() for n in names) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_corruption_is_deterministic_per_seed_and_within_range(name):
    out = corrupt(IMAGES, name, 3, seed=0)
    assert out.dtype == np.uint8 and out.shape == IMAGES.shape
    assert np.array_equal(out, corrupt(IMAGES, name, 3, seed=0))  # same seed, same images
    assert not np.array_equal(out, IMAGES)
    if name in DETERMINISTIC:
        assert np.array_equal(out, corrupt(IMAGES, name, 3, seed=1))
    else:
        assert not np.array_equal(out, corrupt(IMAGES, name, 3, seed=1))
        assert not np.array_equal(out, corrupt(IMAGES, name, 3, seed=0, stream=1))
    # values stay in range: clipped, never wrapped around (white stays light, black stays dark)
    white, black = np.full((2, 32, 32, 3), 255, np.uint8), np.zeros((2, 32, 32, 3), np.uint8)
    assert corrupt(white, name, 5).mean() > 150 and corrupt(black, name, 5).mean() < 100


@pytest.mark.parametrize("name", NAMES)
def test_severity_five_does_more_damage_than_one_for_most(name):
    images = photo_like(8, seed=1)
    by_severity = [damage(corrupt(images, name, s), images) for s in (1, 2, 3, 4, 5)]
    if name == "elastic_transform":  # CIFAR-10-C trades a large affine warp (severity 1) for local ones (5)
        assert min(by_severity) > 2, by_severity
        return
    assert by_severity[4] > by_severity[0], by_severity
    if name in MONOTONE:
        assert all(a < b for a, b in itertools.pairwise(by_severity)), by_severity


@pytest.mark.parametrize("name", ["defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "contrast"])
def test_blurs_and_contrast_keep_a_flat_image(name):
    flat = np.full((2, 32, 32, 3), (90, 140, 200), np.uint8)
    assert np.abs(corrupt(flat, name, 5).astype(int) - flat).max() <= 1  # weights sum to 1; truncation costs 1


def test_brightness_is_the_hsv_value_shift():
    image = photo_like(1)[:, :4, :4]
    image = np.concatenate([image, np.zeros((1, 4, 4, 3), np.uint8)], 1)  # black pixels too
    out = corruptions.brightness(image, 5, np.random.default_rng(0))
    for pixel, got in zip(image.reshape(-1, 3) / 255, out.reshape(-1, 3), strict=True):
        h, s, v = colorsys.rgb_to_hsv(*pixel)
        expected = np.array(colorsys.hsv_to_rgb(h, s, min(v + 0.3, 1.0))) * 255
        assert np.abs(expected - got).max() < 1.0 + 1e-6


def test_motion_blur_kernel_is_one_sided_along_the_angle():
    x = np.zeros((1, 32, 32, 1))
    x[0, 16, 16] = 255
    out = corruptions._motion_blur(x, 6, 100.0, np.array([0.0]))[0, ..., 0]  # near-even weights
    assert np.allclose(out.sum(), 255) and np.count_nonzero(out) == 13
    assert set(zip(*np.nonzero(out))) == {(16, c) for c in range(4, 17)}  # pixel (16, c) reads (16, c + i)


def test_other_image_sizes_and_bad_arguments():
    big = photo_like(2, size=64)
    for name in NAMES:
        assert corrupt(big, name, 2).shape == big.shape
    with pytest.raises(ValueError, match="unknown corruption"):
        corrupt(IMAGES, "rain", 1)
    with pytest.raises(ValueError, match="severities"):
        corrupt(IMAGES, "fog", 6)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(IMAGES.astype(np.float32), "fog", 1)


def test_photo_pipeline_round_trip():
    calls = []

    def load_image(data: bytes) -> np.ndarray:
        calls.append(data)
        from cifar_cnn.images import load_image

        return load_image(data, 32)

    out = photo_pipeline(IMAGES, load=load_image)
    assert out.shape == IMAGES.shape and out.dtype == np.uint8 and len(calls) == len(IMAGES)
    assert all(data[:2] == b"\xff\xd8" for data in calls)  # JPEG bytes go through the predict path
    assert 0 < damage(out, IMAGES) < 8  # upscaling, JPEG and back: close, not identical
    assert np.array_equal(out, photo_pipeline(IMAGES))


def test_corruption_accuracy_is_cached(model_file, monkeypatch):
    clf = load(model_file)
    images, labels = photo_like(12, seed=3), np.arange(12) % 10
    calls = []
    predict = clf.predict_proba
    monkeypatch.setattr(clf, "predict_proba", lambda x, tta=None: calls.append(len(x)) or predict(x, tta=tta))
    kwargs = dict(corruptions=["gaussian_noise", "contrast"], progress=False)
    first = corruption_accuracy(clf, images, labels, severities=[1, 5], **kwargs)
    assert sum(calls) == 6 * 12 and not first.cached  # clean, photo, 2 corruptions x 2 severities
    expected = (clf.predict_proba(corrupt(images, "contrast", 5)).argmax(1) == labels).mean()
    assert first.accuracy["contrast"][5] == pytest.approx(expected)
    calls.clear()
    again = corruption_accuracy(clf, images, labels, severities=[1, 5], **kwargs)
    assert calls == [] and again.cached and again.to_dict()["accuracy"] == first.to_dict()["accuracy"]
    more = corruption_accuracy(clf, images, labels, severities=[1, 3, 5], **kwargs)  # computes only severity 3
    assert sum(calls) == 2 * 12 and more.accuracy["contrast"][5] == first.accuracy["contrast"][5]
    assert corruption_accuracy(clf, images, labels, seed=1, compute=False, **kwargs) is None
    calls.clear()
    fresh = corruption_accuracy(clf, images, labels, severities=[1, 5], cache=False, **kwargs)
    assert sum(calls) == 6 * 12 and fresh.to_dict()["accuracy"] == first.to_dict()["accuracy"]
    with pytest.raises(ValueError, match="input size"):
        corruption_accuracy(clf, photo_like(2, size=40), labels[:2], **kwargs)
    # A refitted "none of these" detector changes no prediction: the cache still holds.
    clf.card = dataclasses.replace(clf.card, novelty={**clf.card.novelty, "threshold": 123.0})
    calls.clear()
    assert corruption_accuracy(clf, images, labels, severities=[1, 5], **kwargs).cached and calls == []
    torch.nn.init.zeros_(next(clf.model.parameters()))  # other weights: computed anew
    assert not corruption_accuracy(clf, images, labels, severities=[1], **kwargs).cached


def test_cli_evaluate_corruptions_then_report(model_file, tiny_archive, tmp_path, capsys):
    archive, _ = tiny_archive
    args = ["evaluate", str(model_file), "--data", str(archive), "--test-subset", "8", "--corruptions"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in NAMES) and "photo pipeline accuracy" in out and "mean corruption" in out
    assert main([*args, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["cached"] and result["n"] == 8 and len(result["accuracy"]) == 15
    # the report picks the cached results up by itself
    report = ["report", str(model_file), "--data", str(archive), "--test-subset", "8", "--no-ood"]
    assert main([*report, "--out", str(tmp_path / "r")]) == 0
    assert "mean corruption accuracy" in capsys.readouterr().out
    assert (tmp_path / "r" / "robustness.png").stat().st_size > 10_000
    page = (tmp_path / "r" / "report.html").read_text()
    assert "<h2>Robustness</h2>" in page and "Photo pipeline" in page
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["robustness"]["mean_corruption_accuracy"] == pytest.approx(result["mean_corruption_accuracy"])
    capsys.readouterr()
    assert main(["evaluate", str(model_file), "--data", str(archive), "--corruptions", "--severities", "0,9"]) == 2
    assert "severities" in capsys.readouterr().err

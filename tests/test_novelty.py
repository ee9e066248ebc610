"""The "none of these" detector: its statistics reload and give the same scores, noise and flat
images are "none of the classes" for the bundled model while confident CIFAR-10 test images are not
flagged, reasons in words, old model files behave as before, and the API says why."""

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from torch import nn

import cifar_cnn
from cifar_cnn.checkpoint import load_tensors, save_tensors
from cifar_cnn.evaluate import predict_logits
from cifar_cnn.images import load_image
from cifar_cnn.novelty import (
    PREFIX,
    SCORES,
    STATISTICS,
    NoveltyDetector,
    fit_detector,
    logits_and_features,
    novelty_scores,
)
from cifar_cnn.ood import (
    SYNTHETIC_KINDS,
    composition,
    natural_images,
    out_of_distribution_set,
    out_of_distribution_sets,
)
from cifar_cnn.predict import TORN_MASS, load, none_of_these, torn_between
from cifar_cnn.pretrained import bundled_path
from helpers import encode

NONE = "looks like none of the 10 classes"


@pytest.fixture(scope="module")
def bundled():
    return cifar_cnn.load()


def noise_and_flat() -> list[np.ndarray]:
    """The issue's uniform noise, Gaussian noise, and flat colours (black, white, grey, colours)."""
    np.random.seed(0)
    uniform = [np.random.randint(0, 256, (32, 32, 3)).astype(np.uint8) for _ in range(3)]
    gaussian = [np.clip(np.random.normal(128, 40, (32, 32, 3)), 0, 255).astype(np.uint8) for _ in range(2)]
    colours = [(0, 0, 0), (255, 255, 255), (128, 128, 128), (200, 30, 30), (40, 90, 220), (30, 160, 60)]
    return uniform + gaussian + [np.full((32, 32, 3), c, np.uint8) for c in colours]


def test_bundled_model_carries_a_detector(bundled):
    tensors, meta = load_tensors(bundled_path())
    card = bundled.card.novelty
    assert bundled.detector is not None and card["score"] == "combined_knn" and card["stage"] == "layers.2"
    assert {f"{PREFIX}{k}" for k in STATISTICS["combined_knn"]} <= set(tensors)
    assert tensors[PREFIX + "bank"].shape == (5000, 256) and tensors[PREFIX + "bank"].dtype == torch.float16
    assert card["fit_images"] == 10_000 and card["threshold_images"] == 1000 and card["quantile"] == 0.95
    assert card["test_flagged"] <= 0.06  # false alarms on the CIFAR-10 test set, measured when fitted
    assert meta["novelty"] == card


def test_noise_and_flat_images_look_like_none_of_the_classes(bundled):
    for p in bundled.predict(noise_and_flat()):
        assert p.uncertain and p.reason == NONE, (p.label, p.score, p.novelty)
    assert bundled.predict(noise_and_flat()[0]).to_dict()["reason"] == NONE


def test_confident_cifar_test_images_are_not_flagged(bundled, real_data):
    _, (x_test, y_test) = real_data
    predictions = bundled.predict(list(x_test[:300]))
    confident = [
        p for p, y in zip(predictions, y_test[:300].ravel()) if p.score > 0.95 and p.label == bundled.classes[y]
    ]
    assert len(confident) > 150
    assert np.mean([p.uncertain for p in confident]) < 0.03  # a confident test image is (all but always) not flagged
    assert sum(p.reason == NONE for p in predictions) / len(predictions) < 0.1  # ~5% false alarms


def test_reasons_in_words(bundled):
    classes = bundled.classes
    row = np.full(10, 0.15 / 8, np.float32)
    row[3], row[5] = 0.45, 0.40  # cat, dog
    order = np.argsort(-row)
    low, high = bundled.detector.threshold - 1, bundled.detector.threshold + 1
    assert bundled.reason(row, order, low) == torn_between("cat", "dog") == "torn between cat and dog"
    assert bundled.reason(row, order, high) == none_of_these(10) == NONE
    sure = np.eye(10, dtype=np.float32)[3] * 0.98 + 0.002
    assert bundled.reason(sure, np.argsort(-sure), low) is None
    assert bundled.reason(sure, np.argsort(-sure), high) == NONE  # confident, but unlike any training image
    spread = np.full(10, 0.1, np.float32)  # no novelty score (no detector): spread thin is "none of these"
    assert spread[:2].sum() < TORN_MASS and bundled.reason(spread, np.argsort(-spread), None) == NONE
    assert bundled.reason(row, order, None) == torn_between(classes[3], classes[5])


@pytest.mark.parametrize("score", SCORES)
def test_stored_statistics_reload_and_give_the_same_scores(score, tmp_path):
    rng = np.random.default_rng(0)
    labels = torch.as_tensor(rng.integers(0, 4, 300))
    train = {"penultimate": torch.as_tensor(rng.gamma(2, 1, (300, 16)), dtype=torch.float32) + labels[:, None],
             "stage": torch.as_tensor(rng.normal(0, 1, (300, 8)), dtype=torch.float32)}  # fmt: skip
    logits = torch.as_tensor(rng.normal(0, 3, (50, 4)), dtype=torch.float32)
    features = {"penultimate": torch.as_tensor(rng.gamma(2, 1, (50, 16)), dtype=torch.float32),
                "stage": torch.as_tensor(rng.normal(0, 2, (50, 8)), dtype=torch.float32)}  # fmt: skip
    detector = fit_detector(score, (train, labels), (logits, features), 4, 0.7, stage="layers.2")
    save_tensors(tmp_path / "m.safetensors", {"w": torch.zeros(1), **detector.tensors()}, {"novelty": detector.card()})
    tensors, meta = load_tensors(tmp_path / "m.safetensors")
    again = NoveltyDetector.from_file(meta["novelty"], tensors)
    assert again.score == score and again.threshold == detector.threshold and again.stage == "layers.2"
    assert np.array_equal(again.scores(logits, features, 0.7), detector.scores(logits, features, 0.7))
    assert 0.92 <= (detector.scores(logits, features, 0.7) <= detector.threshold).mean() <= 0.98  # 95th percentile


def test_bundled_model_file_reloads_with_the_same_scores(bundled, tmp_path):
    tensors, meta = load_tensors(bundled_path())
    save_tensors(tmp_path / "copy.safetensors", tensors, {k: v for k, v in meta.items() if k != "format_version"})
    copy = load(tmp_path / "copy.safetensors")
    photo = natural_images()[0]  # matplotlib's Grace Hopper: there wherever the package is
    crops = [load_image(photo[y : y + 150, x : x + 150], 32) for y, x in ((0, 0), (200, 100), (300, 300))]
    images = np.stack([*noise_and_flat(), load_image(photo, 32), *crops])
    logits, scores = bundled.logits_and_novelty(images)
    logits_again, scores_again = copy.logits_and_novelty(images)
    assert torch.equal(logits, logits_again) and np.array_equal(scores, scores_again)


def test_old_model_files_without_statistics_behave_as_before(bundled, tmp_path):
    tensors, meta = load_tensors(bundled_path())
    old = {k: v for k, v in meta.items() if k not in ("format_version", "novelty")}
    save_tensors(tmp_path / "old.safetensors", {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}, old)
    clf = load(tmp_path / "old.safetensors")
    assert clf.detector is None and clf.card.novelty == {}
    images = np.stack(noise_and_flat())
    probs = clf.predict_proba(images)
    assert np.array_equal(probs, bundled.predict_proba(images))  # the same weights, the same probabilities
    for p, row in zip(clf.to_predictions(probs, 3), probs, strict=True):
        assert p.uncertain == (row.max() < clf.uncertain_threshold)  # the flag as before: probability only
        assert (p.reason is None) == (not p.uncertain)


def test_predictions_carry_the_detectors_verdict(bundled):
    images = np.stack(noise_and_flat()[:3])
    probs, novelty = bundled.scores(images)  # one pass: what the server's batcher, bulk and widgets use
    assert np.array_equal(probs, bundled.predict_proba(images)) and novelty.shape == (3,)
    for predictions in (bundled.to_predictions(probs, 3, novelty), bundled.predict_arrays(images, 3)):
        assert [p.reason for p in predictions] == [NONE] * 3 and all(p.novelty is not None for p in predictions)
    # without novelty scores, to_predictions falls back to the probability flag
    assert all(p.novelty is None for p in bundled.to_predictions(probs, 3))


def test_feature_hooks_leave_the_logits_unchanged(bundled):
    x = bundled.preprocess(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8))
    logits, features = logits_and_features(bundled.model, x, tta=2, stage="layers.2")
    assert torch.equal(logits, predict_logits(bundled.model, x, tta=2))
    assert not bundled.model.training  # left in eval mode, as predict_logits leaves it
    assert features["penultimate"].shape == (8, 256) and features["stage"].shape == (8, 256)


def test_a_model_without_a_linear_head_falls_back_to_logits():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    x = torch.zeros(2, 3, 32, 32)
    logits, features = logits_and_features(model, x, stage="0")
    assert features is None and logits.shape == (2, 4)


def test_training_fits_and_stores_a_detector(model_file):
    tensors, meta = load_tensors(model_file)
    assert meta["novelty"]["score"] == "combined_knn" and meta["novelty"]["stage"] == "5"  # keras_cnn's first block
    assert {f"{PREFIX}{k}" for k in STATISTICS["combined_knn"]} <= set(tensors)
    clf = load(model_file)
    assert clf.detector is not None
    for p in clf.predict(noise_and_flat()[:4]):
        assert p.reason in (None, "looks like none of the 10 classes") or p.reason.startswith("torn between ")


def test_api_and_widget_say_why(bundled):
    from cifar_cnn.serve import create_app
    from cifar_cnn.widgets import prediction_figure

    noise = Image.fromarray(noise_and_flat()[0])
    with TestClient(create_app(bundled)) as client:
        body = client.post("/v1/predict", files=[("files", ("noise.png", encode(noise, "PNG"), "image/png"))]).json()
        schema = client.get("/openapi.json").json()["components"]["schemas"]["PredictionBody"]
    assert body[0]["uncertain"] is True and body[0]["reason"] == NONE and "reason" in schema["properties"]
    assert set(body[0]) == {"filename", "label", "score", "predictions", "uncertain", "reason"}
    prediction = bundled.predict(noise_and_flat()[0])
    figure = prediction_figure(noise_and_flat()[0], noise_and_flat()[0], prediction)
    assert NONE in figure.axes[2].get_title()


def test_out_of_distribution_sets():
    sets = out_of_distribution_sets(size=40, crops_per_image=2, n_synthetic=14, seed=1)
    assert list(sets) == ["natural", "graphics", "synthetic"]
    assert all(x.dtype == np.uint8 and x.shape[1:] == (40, 40, 3) for x in sets.values())
    counts = composition(crops_per_image=2, n_synthetic=14)
    assert {k: sum(v.values()) for k, v in counts.items()} == {k: len(v) for k, v in sets.items()}
    assert counts["natural"]["matplotlib sample_data"] == 3 and counts["synthetic"] == dict.fromkeys(SYNTHETIC_KINDS, 2)
    again = out_of_distribution_sets(size=40, crops_per_image=2, n_synthetic=14, seed=1)
    assert all(np.array_equal(sets[k], again[k]) for k in sets)
    assert len(out_of_distribution_set(n_synthetic=14, crops_per_image=2, seed=1, size=40)) == sum(
        map(len, sets.values())
    )


def test_combined_knn_is_standardized_on_training_images_outside_its_bank():
    """A bank image finds itself among its neighbours: standardizing the kNN part on those would
    make every new image look more novel than training images. New images drawn like the training
    ones must score, on average, as the standardization says."""
    rng = np.random.default_rng(0)

    def draw(n):
        labels = torch.as_tensor(rng.integers(0, 4, n))
        pen = torch.as_tensor(rng.gamma(2, 1, (n, 16)), dtype=torch.float32) + labels[:, None]
        return {"penultimate": pen, "stage": torch.as_tensor(rng.normal(0, 1, (n, 8)), dtype=torch.float32)}, labels

    train, labels = draw(2000)
    val, _ = draw(200)
    detector = fit_detector("combined_knn", (train, labels), (torch.zeros(200, 4), val), 4, 1.0, stage="layers.2")
    assert detector.stats["bank"].shape == (1000, 16) and detector.info["k"] == 5
    mean, std = detector.info["standardize"]["knn"]
    fresh, _ = draw(2000)
    knn = novelty_scores("knn", torch.empty(0), fresh, 1.0, detector.stats, detector.info)
    assert abs(knn.mean() - mean) < 0.1 * std
    on_all = novelty_scores("knn", torch.empty(0), train, 1.0, detector.stats, detector.info)
    assert on_all.mean() < mean - 0.03 * std  # what standardizing on every training image would have given

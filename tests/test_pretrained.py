"""The weights bundled in the package: they load with no training, carry their provenance, and
classify the CIFAR-10 test set at the accuracy their metadata states."""

import numpy as np
import pytest

import cifar_cnn
from cifar_cnn.cli import main


def test_bundled_model_loads_with_metadata():
    clf = cifar_cnn.load()
    meta = clf.metadata
    assert clf.name == "fast" and meta["recipe"]["name"] == "fast" and isinstance(meta["seed"], int)
    assert meta["metrics"]["test_accuracy"] > 0.9
    assert len(meta["data"]["sha256"]) == 64 and meta["data"]["archive_sha256"]
    assert 0 < clf.temperature < 1  # label smoothing made it under-confident; calibration sharpens
    assert 0 < clf.uncertain_threshold < 1 and meta["holdout_ece_after"] < meta["holdout_ece_before"]


def test_predict_without_a_model_argument(tmp_path, capsys):
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (640, 480), (90, 140, 220)).save(photo)
    assert main(["predict", str(photo)]) == 0
    assert capsys.readouterr().out.startswith(f"{photo}: ")


@pytest.mark.slow
def test_bundled_model_reaches_its_stated_accuracy(real_data):
    from cifar_cnn.data import arrays_sha256

    clf = cifar_cnn.load()
    _, (x_test, y_test) = real_data
    if arrays_sha256(real_data) != clf.metadata["data"]["sha256"]:
        pytest.skip("a different copy of CIFAR-10 than the one the weights were measured on")
    predicted = clf.predict_proba(x_test).argmax(1)
    accuracy = float((predicted == y_test.ravel()).mean())
    assert accuracy == pytest.approx(clf.accuracy, abs=0.002), (accuracy, clf.accuracy)
    assert np.bincount(predicted, minlength=10).min() > 800  # no class collapsed

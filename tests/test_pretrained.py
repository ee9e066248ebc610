"""The weights bundled in the package: they load by name with no training, carry their provenance,
and classify the CIFAR-10 test set at the accuracy their metadata states."""

from dataclasses import replace

import numpy as np
import pytest

import cifar_cnn
from cifar_cnn.card import ModelCard
from cifar_cnn.cli import main
from cifar_cnn.pretrained import DEFAULT, list_bundled

BUNDLED = list_bundled()


def test_the_default_and_fast_are_bundled():
    assert "fast" in BUNDLED and DEFAULT in BUNDLED
    assert cifar_cnn.load().name == DEFAULT


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_loads_with_metadata(name):
    clf = cifar_cnn.load(name)
    meta = clf.metadata
    assert clf.name == name and meta["recipe"]["name"] == name and isinstance(meta["seed"], int)
    assert clf.architecture == "fast" and meta["metrics"]["test_accuracy"] > 0.89
    assert len(meta["data"]["sha256"]) == 64 and meta["data"]["archive_sha256"]
    assert 0 < clf.temperature < 1  # label smoothing made it under-confident; calibration sharpens
    assert 0 < clf.uncertain_threshold < 1 and meta["holdout_ece_after"] < meta["holdout_ece_before"]
    assert clf.detector is not None and meta["hardware"]["cpu"]  # where it was trained, on record


def test_the_api_and_export_name_the_default_by_its_recipe():
    from fastapi.testclient import TestClient

    from cifar_cnn.export import export_metadata
    from cifar_cnn.serve import create_app

    clf = cifar_cnn.load()
    with TestClient(create_app(clf)) as client:
        info = client.get("/v1/models").json()[0]
        assert (info["name"], info["architecture"]) == (DEFAULT, "fast")
        assert client.get("/readyz").json()["model"] == DEFAULT
    assert export_metadata(clf)["name"] == DEFAULT and export_metadata(clf)["model"] == "fast"


def test_a_model_is_called_by_its_recipe_where_that_names_a_variant():
    card = ModelCard(model="fast", classes=["a", "b"], mean=(0.5,) * 3, std=(0.25,) * 3, input_size=32,
                     recipe={"name": "robust"})  # fmt: skip
    assert card.name == "robust"
    assert replace(card, recipe={"name": "fast"}).name == "fast"
    assert replace(card, recipe={"name": "keras_cnn"}).name == "fast"  # another net's recipe: the architecture
    assert replace(card, recipe={}).name == "fast"
    assert replace(card, model="custom", recipe={"name": "keras_cnn"}).name == "custom"


def test_predict_without_a_model_argument_and_by_name(tmp_path, capsys):
    from PIL import Image

    photo = tmp_path / "photo.jpg"
    Image.new("RGB", (640, 480), (90, 140, 220)).save(photo)
    assert main(["predict", str(photo)]) == 0
    assert capsys.readouterr().out.startswith(f"{photo}: ")
    assert main(["predict", "--model", "fast", "--json", str(photo)]) == 0
    assert '"label"' in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_reaches_its_stated_accuracy(name, real_data):
    from cifar_cnn.data import arrays_sha256

    clf = cifar_cnn.load(name)
    _, (x_test, y_test) = real_data
    if arrays_sha256(real_data) != clf.metadata["data"]["sha256"]:
        pytest.skip("a different copy of CIFAR-10 than the one the weights were measured on")
    predicted = clf.predict_proba(x_test).argmax(1)
    accuracy = float((predicted == y_test.ravel()).mean())
    assert accuracy == pytest.approx(clf.accuracy, abs=0.002), (accuracy, clf.accuracy)
    assert np.bincount(predicted, minlength=10).min() > 800  # no class collapsed

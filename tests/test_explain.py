"""Explanations (explain.py): LayerCAM heatmaps, `predict --explain`, `POST /v1/explain`."""

import base64
import io
import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

import cifar_cnn
from cifar_cnn.cli import main
from cifar_cnn.explain import ExplainError
from cifar_cnn.predict import load
from helpers import tiny_net


def png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, "PNG")
    return buf.getvalue()


def planted(picture: np.ndarray, rng: np.random.Generator, background: str) -> tuple[np.ndarray, tuple[int, int]]:
    """`picture` (32x32x3) pasted at a random place into a 64 px flat or noisy background: (image, (y, x))."""
    if background == "flat":
        canvas = np.full((64, 64, 3), rng.integers(0, 256, 3), np.uint8)
    else:
        canvas = (rng.integers(0, 256, (64, 64, 3)) // 4 + 96).astype(np.uint8)
    y, x = (int(v) for v in rng.integers(0, 33, 2))
    canvas[y : y + 32, x : x + 32] = picture
    return canvas, (y, x)


@pytest.mark.parametrize("background", ["flat", "noise"])
def test_heatmap_finds_a_planted_object(real_data, background):
    """CIFAR-10 test pictures the bundled model is sure of, pasted into a bigger background: the
    heatmap is hotter on the picture than around it, and peaks on it."""
    (_, _), (x_test, y_test) = real_data
    clf = cifar_cnn.load("fast")
    probs = clf.predict_proba(x_test[:200])
    labels = y_test[:200].ravel()
    sure = [i for i in range(200) if probs[i].argmax() == labels[i] and probs[i].max() > 0.9][:30]
    assert len(sure) == 30
    rng = np.random.default_rng(1)
    ratios, peaks = [], 0
    for i in sure:
        image, (y, x) = planted(x_test[i], rng, background)
        why = clf.explain(image, target=clf.classes[labels[i]])
        assert why.heatmap.shape == (64, 64)
        inside = np.zeros((64, 64), bool)
        inside[y : y + 32, x : x + 32] = True
        ratios.append(why.heatmap[inside].mean() / max(why.heatmap[~inside].mean(), 1e-6))
        peaks += bool(inside.flat[why.heatmap.argmax()])
    assert np.median(ratios) > 2.0, ratios
    assert peaks >= 24, peaks  # 80%: bench/explain_layers.py: 59/60 (flat) and 57/60 (noise)


def test_heatmap_has_the_picture_size_and_only_covers_what_the_model_saw():
    clf = cifar_cnn.load("fast")
    rng = np.random.default_rng(0)
    wide = rng.integers(0, 256, (90, 150, 3), dtype=np.uint8)
    why = clf.explain(wide)
    assert why.heatmap.shape == (90, 150) and why.heatmap.dtype == np.float32
    assert why.image.size == (150, 90) and why.overlay().size == (150, 90)
    assert why.box == (30, 0, 120, 90)  # the central 90x90 square: what to_model_size crops
    assert why.heatmap.min() >= 0 and why.heatmap.max() <= 1
    assert not why.heatmap[:, :30].any() and not why.heatmap[:, 120:].any()
    assert why.heatmap[:, 30:120].max() > 0.9
    # the prediction is the same as predict's
    assert why.prediction.to_dict() == clf.predict(wide).to_dict()
    assert why.target == why.prediction.label and why.layer == "layers.2"


def test_big_pictures_are_shown_at_most_512_px():
    clf = cifar_cnn.load("fast")
    big = np.random.default_rng(0).integers(0, 256, (1200, 900, 3), dtype=np.uint8)
    why = clf.explain(png(big))
    assert why.image.size == (384, 512) and why.heatmap.shape == (512, 384)


def test_explain_another_class_and_bad_targets():
    clf = cifar_cnn.load("fast")
    image = np.random.default_rng(3).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a, b = clf.explain(image, "cat"), clf.explain(image, "truck")
    assert a.target == "cat" and b.target == "truck"
    assert not np.allclose(a.heatmap, b.heatmap)
    with pytest.raises(ExplainError, match=r"unknown class .unicorn.*airplane"):
        clf.explain(image, "unicorn")


def test_explaining_leaves_predictions_unchanged():
    """explain runs a private copy of the model with gradients: the model's own state is untouched."""
    clf = cifar_cnn.load("fast")
    images = np.random.default_rng(4).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    before = clf.predict_proba(images)
    clf.explain(images[0])
    assert np.array_equal(before, clf.predict_proba(images))
    assert all(not p.requires_grad or p.grad is None for p in clf.model.parameters())
    assert not clf.model._forward_hooks and all(not m._forward_hooks for m in clf.model.modules())


def test_folder_model_explains_its_own_classes(folder_model, own_folder):
    clf = load(folder_model)
    why = clf.explain(own_folder / "grün" / "2.png")
    assert why.target in clf.classes and why.layer == "9"  # keras_cnn's cam_layer
    assert why.heatmap.shape == (why.image.size[1], why.image.size[0])


def test_cli_predict_explain(tmp_path, capsys):
    rng = np.random.default_rng(0)
    folder = tmp_path / "photos"
    (folder / "a").mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(folder / "x.png")
    Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / "a" / "x.png")
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    out = tmp_path / "why"
    code = main(["predict", str(folder), "--recursive", "--explain", str(out), "--json"])
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 1  # one file could not be read
    written = sorted(p.name for p in out.iterdir())
    assert written == ["x-2.why.png", "x.why.png"]  # two pictures named x: the second numbered
    explained = [line for line in lines if "explanation" in line]
    assert len(explained) == 2 and {line["explanation"] for line in explained} == {str(p) for p in out.iterdir()}
    assert Image.open(out / "x.why.png").size in {(64, 48), (40, 40)}


def test_cli_explain_refuses_out(tmp_path, capsys):
    image = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(image)
    assert main(["predict", str(image), "--explain", str(tmp_path / "w"), "--out", str(tmp_path / "o.csv")]) == 2
    assert "--explain" in capsys.readouterr().err


def test_api_explain():
    from cifar_cnn.serve import create_app

    image = png(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8))
    with TestClient(create_app(cifar_cnn.load("fast"))) as client:
        r = client.post("/v1/explain", files={"file": ("p.png", image, "image/png")})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["filename"] == "p.png" and body["target"] == body["label"]
        assert body["explanation"].startswith("data:image/png;base64,")
        overlay = Image.open(io.BytesIO(base64.b64decode(body["explanation"].split(",", 1)[1])))
        assert overlay.size == (80, 60)
        r = client.post("/v1/explain?target=dog", files={"file": ("p.png", image, "image/png")})
        assert r.status_code == 200 and r.json()["target"] == "dog"
        r = client.post("/v1/explain?target=unicorn", files={"file": ("p.png", image, "image/png")})
        assert r.status_code == 422 and "unicorn" in r.json()["error"]
        r = client.post("/v1/explain", files={"file": ("t.txt", b"hello", "text/plain")})
        assert r.status_code == 415 and r.json()["filename"] == "t.txt"
        assert "/v1/explain" in client.get("/openapi.json").json()["paths"]


def test_own_module_explained_with_its_code_and_refused_as_a_program(own_folder, tmp_path):
    from cifar_cnn.predict import Classifier

    result = cifar_cnn.train(model=tiny_net(), data=str(own_folder), epochs=1, out_dir=tmp_path / "run", progress=False)
    image = own_folder / "red" / "1.png"
    why = Classifier(result.model, result.card).explain(image)
    assert why.layer == "bn" and why.heatmap.shape == (why.image.size[1], why.image.size[0])
    program = load(tmp_path / "run")  # saved as a torch.export program: no layers to hook
    with pytest.raises(ExplainError, match=r"torch.export program.*Classifier\(your_trained_module, card\)"):
        program.explain(image)

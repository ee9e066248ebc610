"""The HTTP API through the ASGI test client: predictions, limits, and every kind of bad file."""

import io

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cifar_cnn.predict import load
from cifar_cnn.serve import create_app
from helpers import encode, png_header_only


def photo(w=200, h=150) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def client(model_file):
    app = create_app(load(model_file), max_upload_bytes=2 * 2**20)
    with TestClient(app) as c:
        yield c


def post(client, *files):
    return client.post(
        "/v1/predict", files=[("files", (name, data, "application/octet-stream")) for name, data in files]
    )


def test_health_models_docs(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["model"] == "keras_cnn"
    [info] = client.get("/v1/models").json()
    assert info["name"] == "keras_cnn" and len(info["classes"]) == 10 and info["input_size"] == [3, 32, 32]
    assert info["accuracy_label"] == "test accuracy"
    assert "/v1/predict" in client.get("/openapi.json").json()["paths"]


def test_page_is_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert '<script src="http' not in page.text and "cdn" not in page.text.lower()


def test_predict_several_images(client, model_file):
    jpg = encode(photo(), "JPEG")
    png = encode(photo(64, 64).convert("RGBA"), "PNG")
    response = post(client, ("a.jpg", jpg), ("b.png", png))
    assert response.status_code == 200
    body = response.json()
    assert [r["filename"] for r in body] == ["a.jpg", "b.png"]
    for r in body:
        scores = [p["score"] for p in r["predictions"]]
        assert len(scores) == 5 and scores == sorted(scores, reverse=True) and isinstance(r["uncertain"], bool)
    # The server answers what the Python API answers for the same file.
    expected = load(model_file).predict(jpg)
    assert body[0]["predictions"][0]["label"] == expected.label
    assert body[0]["predictions"][0]["score"] == pytest.approx(expected.score, abs=5e-3)  # bf16, other batch


@pytest.mark.parametrize(
    "name, data, status",
    [
        ("empty.jpg", b"", 422),
        ("truncated.jpg", encode(photo(400, 300), "JPEG")[:3000], 422),
        ("text.png", b"hello, I am not a PNG", 415),
        ("huge.png", png_header_only(20000, 20000), 413),
    ],
)
def test_bad_files_get_clear_json_errors(client, name, data, status):
    response = post(client, (name, data))
    assert response.status_code == status
    body = response.json()
    assert body["filename"] == name and name in body["error"]


def test_odd_but_valid_images_are_answered(client):
    frames = [Image.new("RGB", (40, 40), c) for c in [(255, 0, 0), (0, 0, 255)]]
    gif = io.BytesIO()
    frames[0].save(gif, "GIF", save_all=True, append_images=frames[1:], duration=100)
    cmyk = encode(photo().convert("CMYK"), "JPEG")
    png16 = encode(Image.fromarray(np.full((50, 50), 30000, np.uint16)), "PNG")
    response = post(client, ("anim.gif", gif.getvalue()), ("cmyk.jpg", cmyk), ("16bit.png", png16))
    assert response.status_code == 200 and len(response.json()) == 3


def test_upload_size_limit(client):
    too_big = b"\xff\xd8" + b"\0" * (2 * 2**20 + 10)
    response = post(client, ("big.jpg", too_big))
    assert response.status_code == 413 and "limit" in response.json()["error"]


def test_no_files(client):
    assert client.post("/v1/predict").status_code == 422


def test_concurrent_requests_share_batches(model_file):
    import asyncio

    import httpx

    app = create_app(load(model_file), max_wait_ms=20)
    data = encode(photo(), "PNG")

    async def run():
        transport = httpx.ASGITransport(app=app)
        async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://t") as c:
            responses = await asyncio.gather(
                *(c.post("/v1/predict", files={"files": ("x.png", data)}) for _ in range(16))
            )
        return responses

    responses = asyncio.run(run())
    assert all(r.status_code == 200 for r in responses)
    batcher = app.state.batcher
    assert batcher.items == 16 and batcher.batches < 16  # several requests per forward pass


# ---- a model trained on your own folder: its classes, its input size ----------------------------

CIFAR_WORDS = ("CIFAR", "airplane", "automobile", "truck", "ten classes")


@pytest.fixture(scope="module")
def folder_client(folder_model):
    with TestClient(create_app(load(folder_model))) as c:
        yield c


def test_folder_model_is_described_by_its_own_classes(folder_client):
    [info] = folder_client.get("/v1/models").json()
    assert info["classes"] == ["blue sky", "grün", "red"] and info["num_classes"] == 3
    assert info["name"] == "keras_cnn" and info["input_size"] == [3, 32, 32]
    assert info["accuracy_label"] == "validation accuracy"  # the folder has no test split
    description = folder_client.get("/openapi.json").json()["info"]["description"]
    assert "grün" in description and "32x32" in description
    page = folder_client.get("/").text  # the static page names no class: it renders /v1/models
    for text in (description, page):
        assert not [w for w in CIFAR_WORDS if w.lower() in text.lower()], text


def test_folder_model_predicts_one_of_its_classes(folder_client, folder_model, own_folder):
    data = (own_folder / "grün" / "1.png").read_bytes()
    response = post(folder_client, ("grün 1.png", data), ("noise.jpg", encode(photo(), "JPEG")))
    assert response.status_code == 200
    body = response.json()
    expected = load(folder_model).predict([data, encode(photo(), "JPEG")], top_k=5)
    for result, want, name in zip(body, expected, ["grün 1.png", "noise.jpg"], strict=True):
        assert set(result) >= {"filename", "label", "score", "predictions", "uncertain"}  # Prediction.to_dict()
        assert result["filename"] == name and len(result["predictions"]) == 3  # top 5 of 3 classes: all 3
        assert {p["label"] for p in result["predictions"]} == {"blue sky", "grün", "red"}
        assert result["label"] == result["predictions"][0]["label"] == want.label
        assert result["score"] == pytest.approx(want.score, abs=5e-3)
    assert body[0]["label"] == "grün"


def test_64px_model_is_fed_at_its_own_size(folder_model_64, own_folder):
    clf = load(folder_model_64)
    with TestClient(create_app(clf)) as client:
        assert client.get("/v1/models").json()[0]["input_size"] == [3, 64, 64]
        data = encode(photo(300, 200), "PNG")
        response = post(client, ("big.png", data), ("red.jpg", (own_folder / "red" / "0.jpg").read_bytes()))
    assert response.status_code == 200, response.text
    body = response.json()
    # Decoded at 64x64 as the Python API does: the same probabilities, not a 32 px image blown up.
    probs = clf.predict_proba(clf.load_image(data)[None])[0]
    got = {p["label"]: p["score"] for p in body[0]["predictions"]}
    assert got == pytest.approx(dict(zip(clf.classes, probs.tolist(), strict=True)), abs=5e-3)
    assert body[1]["label"] == "red"

"""The Open Inference Protocol (/v2): the official Triton client against a running server, and the
protocol's JSON shapes and error shape through the ASGI test client."""

import base64
import gzip
import socket
import threading
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from cifar_cnn.predict import load
from cifar_cnn.serve import create_app
from cifar_cnn.serve.oip import InferenceResponse, ModelMetadata, ServerMetadata
from helpers import encode

INFER = "/v2/models/keras_cnn/infer"


def pixels(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def image_files() -> list[bytes]:
    """Encoded files of other sizes and formats than the model's input: decoded by the server."""
    rng = np.random.default_rng(3)
    photo = Image.fromarray(rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
    return [encode(photo, "JPEG"), encode(photo.resize((40, 40)).convert("RGBA"), "PNG"), encode(photo, "PNG")]


@pytest.fixture(scope="module")
def clf(model_file):
    return load(model_file)


@pytest.fixture(scope="module")
def client(model_file):
    with TestClient(create_app(load(model_file))) as c:
        yield c


@pytest.fixture(scope="module")
def server(model_file):
    """A real uvicorn server on a free loopback port, in a background thread: 'host:port'."""
    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(load(model_file)), log_level="warning", lifespan="on")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.started, "uvicorn did not start"
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    srv.should_exit = True
    thread.join(10)
    sock.close()


@pytest.fixture(scope="module")
def triton(server):
    httpclient = pytest.importorskip("tritonclient.http")
    c = httpclient.InferenceServerClient(url=server)
    yield c
    c.close()


# ---- the official client against a running server ------------------------------------------------


def test_triton_client_health_and_metadata(triton, clf):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("keras_cnn") and triton.is_model_ready("cifar-cnn")
    assert triton.is_model_ready("keras_cnn", model_version="1")
    assert not triton.is_model_ready("no-such-model")
    meta = triton.get_server_metadata()
    assert meta["name"] == "cifar-cnn" and "binary_tensor_data" in meta["extensions"]
    model = triton.get_model_metadata("keras_cnn")
    assert model == triton.get_model_metadata("cifar-cnn", model_version="1")
    assert model["parameters"]["classes"] == clf.classes
    assert {t["name"]: (t["datatype"], t["shape"]) for t in model["inputs"]} == {
        "images": ("UINT8", [-1, 32, 32, 3]), "image_files": ("BYTES", [-1])}  # fmt: skip
    assert {t["name"]: (t["datatype"], t["shape"]) for t in model["outputs"]} == {
        "probabilities": ("FP32", [-1, 10]), "labels": ("BYTES", [-1])}  # fmt: skip


def expected_labels(clf, probs: np.ndarray) -> list[str]:
    return [clf.classes[i] for i in probs.argmax(axis=1)]


def check_outputs(clf, probs: np.ndarray, labels: np.ndarray, want_probs: np.ndarray, want_labels: list[str]) -> None:
    """The server's probabilities are the Python API's; its labels are its top-1, and the API's."""
    assert probs.dtype == np.float32 and probs.shape == want_probs.shape
    np.testing.assert_allclose(probs, want_probs, atol=5e-3)  # bf16 where the CPU has it, another batch
    labels = [x.decode() if isinstance(x, bytes) else x for x in labels]  # binary: bytes, JSON: str
    assert labels == expected_labels(clf, probs)
    if not clf.bf16:  # in bf16 the near-uniform tiny model's top two may swap between batches
        assert labels == want_labels


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_triton_client_infers_pixels(triton, clf, binary):
    from tritonclient.http import InferInput, InferRequestedOutput

    x = pixels(5)
    inp = InferInput("images", list(x.shape), "UINT8").set_data_from_numpy(x, binary_data=binary)
    outputs = [InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "labels")]
    result = triton.infer("keras_cnn", [inp], outputs=outputs, request_id="r1")
    want = clf.predict_proba(x)
    check_outputs(clf, result.as_numpy("probabilities"), result.as_numpy("labels"), want, expected_labels(clf, want))
    assert result.get_response()["id"] == "r1"


def test_triton_client_defaults_gzip_and_classification(triton, clf):
    """No outputs named: all of them, as binary data (the client asks so); a gzip body; top-k strings."""
    from tritonclient.http import InferInput, InferRequestedOutput

    x = pixels(3, seed=1)
    inp = InferInput("images", list(x.shape), "UINT8").set_data_from_numpy(x)
    result = triton.infer("cifar-cnn", [inp], request_compression_algorithm="gzip")
    want = clf.predict_proba(x)
    np.testing.assert_allclose(result.as_numpy("probabilities"), want, atol=5e-3)
    top = triton.infer("keras_cnn", [inp], outputs=[InferRequestedOutput("probabilities", class_count=2)])
    first = [s.decode().split(":", 2) for s in top.as_numpy("probabilities")[:, 0]]  # "score:index:label"
    assert [label for _, _, label in first] == [clf.classes[int(i)] for _, i, _ in first]
    np.testing.assert_allclose([float(p) for p, _, _ in first], want.max(axis=1), atol=5e-3)


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json-base64"])
def test_triton_client_infers_image_files(triton, clf, binary):
    from tritonclient.http import InferInput, InferRequestedOutput

    files = image_files()
    # Binary tensor data carries the raw bytes; JSON carries strings, so each file goes base64-encoded.
    data = np.array(files if binary else [base64.b64encode(f) for f in files], dtype=object)
    inp = InferInput("image_files", [len(files)], "BYTES").set_data_from_numpy(data, binary_data=binary)
    outputs = [InferRequestedOutput(name, binary_data=binary) for name in ("probabilities", "labels")]
    result = triton.infer("keras_cnn", [inp], outputs=outputs)
    want = clf.predict_proba(np.stack([clf.load_image(f) for f in files]))
    check_outputs(clf, result.as_numpy("probabilities"), result.as_numpy("labels"), want,
                  [p.label for p in clf.predict(files)])  # fmt: skip


def test_triton_client_sees_protocol_errors(triton):
    from tritonclient.http import InferInput
    from tritonclient.utils import InferenceServerException

    x = pixels(2)[:, :31]
    inp = InferInput("images", list(x.shape), "UINT8").set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as bad_shape:
        triton.infer("keras_cnn", [inp])
    assert bad_shape.value.status() == "400" and "UINT8 [N, 32, 32, 3]" in bad_shape.value.message()
    with pytest.raises(InferenceServerException) as unknown:
        triton.get_model_metadata("resnet")
    assert unknown.value.status() == "404" and "'resnet'" in unknown.value.message()


# ---- the protocol's JSON shapes ------------------------------------------------------------------


def test_metadata_shapes(client, clf):
    server = client.get("/v2").json()
    assert set(server) == {"name", "version", "extensions"} and ServerMetadata.model_validate(server)
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2/models/keras_cnn/ready").json() == {"name": "keras_cnn", "ready": True}
    model = client.get("/v2/models/keras_cnn").json()
    assert {"name", "versions", "platform", "inputs", "outputs"} <= set(model) and ModelMetadata.model_validate(model)
    assert model["name"] == "keras_cnn" and model["versions"] == ["1"]
    assert model["parameters"]["classes"] == clf.classes and model["parameters"]["bytes_encoding"] == "base64"


def infer(client, inputs, **body):
    return client.post(INFER, json={"inputs": inputs, **body})


def test_infer_json_flat_or_nested(client, clf):
    x = pixels(2, seed=4)
    nested = infer(client, [{"name": "images", "shape": [2, 32, 32, 3], "datatype": "UINT8", "data": x.tolist()}],
                   id="42")  # fmt: skip
    flat = infer(client, [{"name": "images", "shape": [2, 32, 32, 3], "datatype": "UINT8",
                           "data": x.ravel().tolist(), "parameters": {"custom": "ignored"}}])  # fmt: skip
    assert nested.status_code == flat.status_code == 200, nested.text
    body = nested.json()
    InferenceResponse.model_validate(body)
    assert body["model_name"] == "keras_cnn" and body["id"] == "42"
    probs, labels = body["outputs"]
    assert (probs["name"], probs["datatype"], probs["shape"]) == ("probabilities", "FP32", [2, 10])
    assert (labels["name"], labels["datatype"], labels["shape"]) == ("labels", "BYTES", [2])
    assert len(probs["data"]) == 20 and all(isinstance(v, float) for v in probs["data"])  # flat, row-major
    want = clf.predict_proba(x)
    got = np.reshape(probs["data"], (2, 10)).astype(np.float32)
    check_outputs(clf, got, labels["data"], want, expected_labels(clf, want))
    assert flat.json()["outputs"] == body["outputs"]


def test_infer_outputs_selection_and_shared_batcher(client):
    batcher = client.app.state.batcher
    before = batcher.items
    jpeg, png = (base64.b64encode(f).decode() for f in image_files()[:2])
    files = [jpeg, "data:image/png;base64," + png]  # plain base64, or a data: URL as browsers make them
    response = infer(client, [{"name": "image_files", "shape": [2], "datatype": "BYTES", "data": files}],
                     outputs=[{"name": "labels"}])  # fmt: skip
    assert response.status_code == 200, response.text
    [labels] = response.json()["outputs"]
    assert labels["name"] == "labels" and labels["shape"] == [2] and len(labels["data"]) == 2
    assert batcher.items == before + 2  # the forward pass went through the app's one micro-batcher


def test_binary_request_and_response_without_the_client(client, clf):
    x = pixels(1, seed=5)
    header = b'{"inputs":[{"name":"images","shape":[1,32,32,3],"datatype":"UINT8","parameters":{"binary_data_size":3072}}],' \
             b'"parameters":{"binary_data_output":true},"outputs":[{"name":"probabilities"},' \
             b'{"name":"labels","parameters":{"binary_data":false}}]}'  # fmt: skip
    response = client.post(INFER, content=header + x.tobytes(),
                           headers={"Inference-Header-Content-Length": str(len(header))})  # fmt: skip
    assert response.status_code == 200 and response.headers["content-type"] == "application/octet-stream"
    n = int(response.headers["inference-header-content-length"])
    import json

    meta = json.loads(response.content[:n])
    probs, labels = meta["outputs"]
    assert probs["parameters"] == {"binary_data_size": 40} and "data" not in probs
    values = np.frombuffer(response.content[n:], "<f4").reshape(1, 10)
    want = clf.predict_proba(x)
    check_outputs(clf, values, labels["data"], want, expected_labels(clf, want))


def uint8(shape, data=None, datatype="UINT8"):
    n = int(np.prod(shape))
    return [{"name": "images", "shape": shape, "datatype": datatype, "data": [0] * n if data is None else data}]


@pytest.mark.parametrize(
    "body, status, words",
    [
        ({"inputs": uint8([2, 31, 32, 3])}, 400, "must be UINT8 [N, 32, 32, 3]; got UINT8 [2, 31, 32, 3]"),
        ({"inputs": uint8([1, 32, 32, 3], datatype="FP32")}, 400, "got FP32 [1, 32, 32, 3]"),
        ({"inputs": uint8([1, 32, 32, 3], data=[1, 2, 3])}, 400, "needs data of 3072 integers 0..255"),
        ({"inputs": uint8([1, 32, 32, 3], data=[256] * 3072)}, 400, "0..255"),
        ({"inputs": uint8([1, 32, 32, 3], data=[[1, 2], [3]])}, 400, "flat or nested"),
        ({"inputs": uint8([65, 32, 32, 3], data=[])}, 413, "at most 64"),
        ({"inputs": uint8([0, 32, 32, 3])}, 400, "no images"),
        ({"inputs": [{"name": "pixels", "shape": [1], "datatype": "UINT8", "data": [1]}]}, 400, "exactly one input"),
        ({"inputs": uint8([1, 32, 32, 3]) * 2}, 400, "exactly one input"),
        ({"inputs": [{"name": "image_files", "shape": [1], "datatype": "BYTES", "data": ["aGVsbG8="]}]}, 415,
         "image_files[0]"),
        ({"inputs": [{"name": "image_files", "shape": [2], "datatype": "BYTES", "data": ["", "?"]}]}, 400,
         "image_files[1] is not base64"),
        ({"inputs": [{"name": "image_files", "shape": [2], "datatype": "BYTES", "data": ["aGk="]}]}, 400,
         "has shape [2] but its data holds 1"),
        ({"inputs": [{"name": "image_files", "shape": [1, 1], "datatype": "BYTES", "data": ["aGk="]}]}, 400,
         "must be BYTES [N]"),
        ({"inputs": uint8([1, 32, 32, 3]), "outputs": [{"name": "logits"}]}, 400, "'probabilities'"),
        ({"inputs": uint8([1, 32, 32, 3]), "outputs": [{"name": "labels", "parameters": {"classification": 2}}]},
         400, "classification applies to output 'probabilities'"),
        ({"inputs": uint8([1, 32, 32, 3]), "parameters": {"binary_data_output": "yes"}}, 400, "binary_data_output"),
        ({"inputs": [{"name": "images", "shape": [-1, 32, 32, 3], "datatype": "UINT8", "data": []}]}, 400,
         "inputs.0.shape.0"),
        ({"inputs": "images"}, 400, "invalid inference request"),
    ],
)  # fmt: skip
def test_infer_errors_say_what_is_expected(client, body, status, words):
    response = client.post(INFER, json=body)
    assert response.status_code == status, response.text
    error = response.json()
    assert set(error) == {"error"} and words in error["error"], error


def test_protocol_errors_beyond_the_tensors(client):
    def check(response, status, words):
        assert response.status_code == status, response.text
        assert words in response.json()["error"]

    check(client.get("/v2/models/resnet"), 404, "unknown model 'resnet'")
    check(client.post("/v2/models/resnet/infer", json={"inputs": uint8([1, 32, 32, 3])}), 404, "'keras_cnn'")
    check(client.get("/v2/models/keras_cnn/versions/2/ready"), 404, "no version '2'")
    check(client.get("/v2/repository/index"), 404, "no such route")
    check(client.post(INFER, content=b"not json"), 400, "Invalid JSON")
    check(client.post(INFER, content=b"{}", headers={"Inference-Header-Content-Length": "9"}), 400,
          "Inference-Header-Content-Length")  # fmt: skip
    check(client.post(INFER, content=gzip.compress(b"{")[:-4], headers={"Content-Encoding": "gzip"}), 400, "gzip")
    check(client.post(INFER, content=b"{}", headers={"Content-Encoding": "br"}), 415, "Content-Encoding")
    wrong_method = client.get(INFER)
    check(wrong_method, 405, "use POST")
    assert wrong_method.headers["allow"] == "POST"


def test_openapi_declares_every_v2_answer(client):
    paths = client.get("/openapi.json").json()["paths"]
    v2 = {p: ops for p, ops in paths.items() if p.startswith("/v2")}
    assert {"/v2", "/v2/health/live", "/v2/health/ready", "/v2/models/{model_name}", "/v2/models/{model_name}/ready",
            "/v2/models/{model_name}/infer"} <= set(v2)  # fmt: skip
    for path, ops in v2.items():
        for op in ops.values():
            assert "422" not in op["responses"], path  # no FastAPI validation: errors are {"error"} with 400
            declared = {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == {n.strip("{}") for n in path.split("/") if n.startswith("{")}, path
    infer_op = v2["/v2/models/{model_name}/infer"]["post"]
    assert {"200", "400", "404", "413", "415"} <= set(infer_op["responses"])
    request = infer_op["requestBody"]["content"]["application/json"]
    assert "inputs" in request["schema"]["properties"] and "$ref" not in str(request["schema"])
    # The documented example works as is, with the documented model name.
    [name] = [p["example"] for p in infer_op["parameters"]]
    response = client.post(f"/v2/models/{name}/infer", json=request["example"])
    assert response.status_code == 200 and InferenceResponse.model_validate(response.json())

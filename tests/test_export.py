import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cifar_cnn.cli import main
from cifar_cnn.export import export, export_summary
from cifar_cnn.predict import load
from helpers import tiny_net


@pytest.fixture(scope="module")
def images(real_data):
    _, (x_test, _) = real_data
    return x_test[:64]


def test_onnx_matches_pytorch_on_real_images(model_file, images, tmp_path):
    out = tmp_path / "m.onnx"
    assert main(["export", str(model_file), "--format", "onnx", "--out", str(out)]) == 0
    clf = load(model_file)
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (images[:1], images):  # the batch dimension is dynamic
        probs, logits = session.run(None, {"images": batch})
        expected = clf.logits(batch, tta=0, bf16=False).numpy()
        np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(probs, clf.predict_proba(batch, tta=0, bf16=False), atol=1e-5)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["classes"]) == clf.classes and len(json.loads(meta["mean"])) == 3


def test_torchscript_matches_pytorch(model_file, images, tmp_path):
    out = tmp_path / "m.pt"
    assert main(["export", str(model_file), "--format", "torchscript", "--out", str(out)]) == 0
    extra = {"metadata.json": ""}
    module = torch.jit.load(str(out), _extra_files=extra)
    with torch.no_grad():
        probs, logits = module(torch.from_numpy(images))
    np.testing.assert_allclose(probs.sum(1).numpy(), 1, atol=1e-5)
    np.testing.assert_allclose(
        logits.numpy(), load(model_file).logits(images, tta=0, bf16=False).numpy(), atol=1e-4, rtol=1e-4
    )
    assert json.loads(extra["metadata.json"])["model"] == "keras_cnn"


# ---- models trained on your own folder (any classes, 32 or 64 px) and your own module ----------


def noisy_batch(n: int, size: int, seed: int = 0) -> np.ndarray:
    """Mixtures of the classes' colours plus noise: logits far from saturated, so the match means something."""
    rng = np.random.default_rng(seed)
    base = rng.uniform(40, 215, (n, 1, 1, 3))
    return np.clip(base + rng.normal(0, 50, (n, size, size, 3)), 0, 255).astype(np.uint8)


def onnx_input_shape(path) -> list:
    [graph_input] = onnx.load(str(path)).graph.input
    return [d.dim_param or d.dim_value for d in graph_input.type.tensor_type.shape.dim]


@pytest.mark.parametrize("which", ["folder_model", "folder_model_64"])
def test_folder_model_onnx_at_its_input_size(which, request, tmp_path):
    clf = load(request.getfixturevalue(which))
    size = clf.input_size
    out = tmp_path / "m.onnx"
    assert main(["export", str(request.getfixturevalue(which)), "--format", "onnx", "--out", str(out)]) == 0
    assert onnx_input_shape(out)[1:] == [size, size, 3]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for batch in (noisy_batch(1, size), noisy_batch(7, size, seed=1)):
        probs, logits = session.run(None, {"images": batch})
        np.testing.assert_allclose(logits, clf.logits(batch, tta=0, bf16=False).numpy(), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(probs, clf.predict_proba(batch, tta=0, bf16=False), atol=1e-4)
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["classes"]) == ["blue sky", "grün", "red"] and int(meta["input_size"]) == size
    assert json.loads(meta["mean"]) == pytest.approx(list(clf.card.mean)) and f"(N, {size}, {size}, 3)" in meta["input"]
    with pytest.raises(Exception, match=r"(?i)dimension|shape|index"):  # the wrong size is refused, not guessed
        session.run(None, {"images": noisy_batch(1, 96 if size == 64 else 64)})


def test_folder_model_torchscript_64(folder_model_64, tmp_path):
    clf = load(folder_model_64)
    path = export(clf, tmp_path / "m.pt", "torchscript")
    extra = {"metadata.json": ""}
    module = torch.jit.load(str(path), _extra_files=extra)
    batch = noisy_batch(5, 64)
    with torch.no_grad():
        probs, logits = module(torch.from_numpy(batch))
    np.testing.assert_allclose(logits.numpy(), clf.logits(batch, tta=0, bf16=False).numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(probs.numpy(), clf.predict_proba(batch, tta=0, bf16=False), atol=1e-4)
    meta = json.loads(extra["metadata.json"])
    assert json.loads(meta["classes"]) == clf.classes and meta["input_size"] == "64"


def test_own_module_model_exports(own_folder, tmp_path):
    """A model from the user's own nn.Module loads as a torch.export program: it exports too."""
    import cifar_cnn

    cifar_cnn.train(model=tiny_net(), data=str(own_folder), image_size=64, epochs=1, out_dir=tmp_path / "run",
                    progress=False)  # fmt: skip
    clf = load(tmp_path / "run")
    assert clf.name == "custom" and clf.input_size == 64
    batch = noisy_batch(4, 64)
    expected = clf.logits(batch, tta=0, bf16=False).numpy()
    session = ort.InferenceSession(str(export(clf, tmp_path / "m.onnx")), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"images": batch})[1], expected, atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        _, logits = torch.jit.load(str(export(clf, tmp_path / "m.pt", "torchscript")))(torch.from_numpy(batch))
    np.testing.assert_allclose(logits.numpy(), expected, atol=1e-4, rtol=1e-4)


def test_export_summary_and_unknown_format(folder_model_64, tmp_path):
    clf = load(folder_model_64)
    with pytest.raises(ValueError, match="unknown export format"):
        export(clf, tmp_path / "m.x", "tflite")
    path = tmp_path / "fake.onnx"
    path.write_bytes(b"x")
    assert "(N, 64, 64, 3)" in export_summary(clf, path) and "3 classes" in export_summary(clf, path)


def test_int8_onnx_agrees_with_pytorch_on_real_images(images, tmp_path):
    """The bundled default quantized on CIFAR-10 training images gives the same top-1 answers."""
    out = tmp_path / "robust.int8.onnx"
    assert main(["export", "--format", "onnx-int8", "--out", str(out)]) == 0
    clf = load()
    probs, _ = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"images": images})
    expected = clf.predict_proba(images, tta=0, bf16=False)
    assert (probs.argmax(1) == expected.argmax(1)).mean() >= 0.95
    assert np.abs(probs - expected).max() > 0  # quantized: not the fp32 graph
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(meta["classes"]) == clf.classes and meta["quantization"].startswith("int8")
    nodes = onnx.load(str(out)).graph.node
    assert any(n.op_type == "QuantizeLinear" for n in nodes)


def test_int8_export_of_a_folder_model_needs_its_images(folder_model_64, own_folder, tmp_path, capsys):
    out = tmp_path / "m.int8.onnx"
    assert main(["export", str(folder_model_64), "--format", "onnx-int8", "--out", str(out)]) == 2
    assert "--calibration FOLDER" in capsys.readouterr().err and not out.exists()
    calibrate = ["--calibration", str(own_folder), "--out", str(out)]
    assert main(["export", str(folder_model_64), "--format", "onnx-int8", *calibrate]) == 0 and out.exists()
    assert main(["export", str(folder_model_64), "--calibration", str(own_folder), "--out", str(out)]) == 2
    assert "--calibration is for --format onnx-int8" in capsys.readouterr().err

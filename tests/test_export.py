import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from cifar_cnn.cli import main
from cifar_cnn.predict import load


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

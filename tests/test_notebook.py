"""The walkthrough notebook and the upload widget, executed in a real Jupyter kernel."""

import json
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "cifar10_walkthrough.ipynb"


def run(nb, cwd, timeout=600):
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
    return nb


def outputs_text(cell) -> str:
    return "".join(o.get("text", "") + json.dumps(o.get("data", {})) for o in cell.get("outputs", []))


WIDGET_CODE = r"""
import datetime, io, json
import numpy as np
from PIL import Image
import cifar_cnn
from cifar_cnn.widgets import classifier_widget

widget = classifier_widget(cifar_cnn.load({model!r}))
buf = io.BytesIO()
Image.fromarray(np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)).save(buf, "JPEG")
good = buf.getvalue()
def item(name, data, kind):
    return {{"name": name, "type": kind, "size": len(data), "content": memoryview(data),
            "last_modified": datetime.datetime.now(datetime.timezone.utc)}}
# What ipywidgets 8 does when the browser sends files: a tuple of dicts with memoryview contents.
widget.upload.value = (item("photo.jpg", good, "image/jpeg"), item("broken.png", b"not a png", "image/png"))
kinds = [sorted(o.get("data", {{}}).keys()) or o.get("output_type") for o in widget.output.outputs]
texts = [o.get("text", "") for o in widget.output.outputs]
print(json.dumps({{"kinds": kinds, "texts": texts}}))
"""


def test_upload_widget_shows_prediction_and_errors(model_file, tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(WIDGET_CODE.format(model=str(model_file)))])
    run(nb, tmp_path, timeout=300)
    result = json.loads(nb.cells[0].outputs[-1]["text"].strip().splitlines()[-1])
    assert any("image/png" in k for k in result["kinds"] if isinstance(k, list)), result
    assert any("Could not read broken.png" in t for t in result["texts"]), result


@pytest.mark.slow
def test_walkthrough_runs_top_to_bottom(tmp_path, real_data):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells[1].source = "FULL_TRAINING = False\nQUICK_TEST = True"
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    run(nb, tmp_path)
    text = "\n".join(outputs_text(c) for c in nb.cells if c.cell_type == "code")
    assert "(50000, 32, 32, 3) uint8 (50000, 1) (10000, 32, 32, 3)" in text
    assert "Total params: 1,250,858" in text
    assert "Test accuracy:" in text and "Confusion matrix" in text
    assert "image/png" in text  # the sample grid and learning curves were drawn
    assert (tmp_path / "runs" / "notebook" / "model.safetensors").is_file()


FOLDER_WIDGET_CODE = r"""
import datetime, json
import matplotlib
import cifar_cnn
from cifar_cnn.widgets import classifier_widget

backend = matplotlib.get_backend()
widget = classifier_widget(cifar_cnn.load({model!r}))
data = open({image!r}, "rb").read()
widget.upload.value = ({{"name": "grün 2.png", "type": "image/png", "size": len(data), "content": memoryview(data),
                        "last_modified": datetime.datetime.now(datetime.timezone.utc)}},)
kinds = [sorted(o.get("data", {{}}).keys()) for o in widget.output.outputs]
print(json.dumps({{"kinds": kinds, "results": widget.results, "header": widget.children[0].value,
                  "backend_before": backend, "backend_after": matplotlib.get_backend()}}))
"""


def test_widget_for_a_folder_model(folder_model, own_folder, tmp_path):
    image = own_folder / "grün" / "2.png"
    code = FOLDER_WIDGET_CODE.format(model=str(folder_model), image=str(image))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    run(nb, tmp_path, timeout=300)
    result = json.loads(nb.cells[0].outputs[-1]["text"].strip().splitlines()[-1])
    assert result["kinds"] == [["image/png", "text/plain"]], result
    [prediction] = result["results"]  # Prediction.to_dict(), as the web API answers
    assert prediction["filename"] == "grün 2.png" and prediction["label"] == "grün"
    assert prediction["predictions"][0]["label"] == "grün" and len(prediction["predictions"]) == 3
    assert all(c in result["header"] for c in ("blue sky", "grün", "red", "32x32"))
    assert result["backend_after"] == result["backend_before"] and "inline" in result["backend_before"]


def test_widget_figure_says_the_real_input_size(folder_model_64, own_folder):
    from cifar_cnn.predict import load
    from cifar_cnn.widgets import predict_upload, prediction_figure

    clf = load(folder_model_64)
    original, small, prediction = predict_upload(clf, (own_folder / "red" / "4.png").read_bytes(), "red.png")
    assert small.shape == (64, 64, 3) and original.size[0] > 0 and prediction.label in clf.classes
    fig = prediction_figure(original, small, prediction)
    assert fig.axes[1].get_title() == "as the model sees it (64x64)"
    assert [t.get_text() for t in fig.axes[2].get_yticklabels()] == [label for label, _ in prediction.top_k][::-1]


WHY_WIDGET_CODE = r"""
import base64, datetime, io, json
from PIL import Image
import cifar_cnn
from cifar_cnn.widgets import classifier_widget

widget = classifier_widget(cifar_cnn.load({model!r}))
data = open({image!r}, "rb").read()
def upload(name):
    widget.upload.value = ({{"name": name, "type": "image/png", "size": len(data), "content": memoryview(data),
                            "last_modified": datetime.datetime.now(datetime.timezone.utc)}},)
upload("plain.png")
widget.why.value = True  # the "Show why" box, ticked as a user would
upload("why.png")
sizes = [Image.open(io.BytesIO(base64.b64decode(o["data"]["image/png"]))).size for o in widget.output.outputs]
print(json.dumps({{"sizes": sizes, "labels": [r["label"] for r in widget.results]}}))
"""


def test_widget_shows_why_when_asked(folder_model, own_folder, tmp_path):
    """Ticking "Show why" adds the heatmap panel: the second figure is wider than the first."""
    code = WHY_WIDGET_CODE.format(model=str(folder_model), image=str(own_folder / "red" / "4.png"))
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    run(nb, tmp_path, timeout=300)
    result = json.loads(nb.cells[0].outputs[-1]["text"].strip().splitlines()[-1])
    (plain_w, plain_h), (why_w, why_h) = result["sizes"]
    assert why_h == plain_h and why_w > plain_w * 1.2, result
    assert result["labels"][0] == result["labels"][1]


def test_widget_figure_with_explanation(folder_model, own_folder):
    from cifar_cnn.predict import load
    from cifar_cnn.widgets import predict_upload, prediction_figure

    clf = load(folder_model)
    data = (own_folder / "grün" / "2.png").read_bytes()
    original, small, prediction = predict_upload(clf, data, "g.png")
    fig = prediction_figure(original, small, prediction, explanation=clf.explain(data, prediction.label))
    assert fig.axes[2].get_title().startswith(f"where it found {prediction.label}")
    assert [t.get_text() for t in fig.axes[3].get_yticklabels()] == [label for label, _ in prediction.top_k][::-1]

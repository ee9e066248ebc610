"""The "your own images" notebook, executed in a real Jupyter kernel (QUICK_TEST: short training)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "your_own_images.ipynb"


def test_your_own_images_notebook_runs(tmp_path):
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nb.cells[1].source = "QUICK_TEST = True"
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = {i: "".join(o.get("text", "") + str(o.get("data", {})) for o in c.get("outputs", [])) for i, c in
            enumerate(nb.cells) if c.cell_type == "code"}  # fmt: skip
    assert "circle" in text[3] and "square" in text[3] and "triangle" in text[3]
    assert "OK: ready to train" in text[5]
    assert "Fine-tuning" not in text[7] and "Initialized from the bundled CIFAR-10 weights" in text[7]
    assert "mistakes out of" in text[9]
    assert "['circle', 'square', 'triangle']" in text[13]
    assert (tmp_path / "runs" / "my_images" / "model.safetensors").is_file() and (tmp_path / "my_images.onnx").is_file()

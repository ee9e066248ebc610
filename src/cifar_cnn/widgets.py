"""Jupyter widgets: upload images, see what the model sees and what it says.

from cifar_cnn.widgets import classifier_widget
classifier_widget()          # bundled pretrained model; or classifier_widget(cifar_cnn.load("runs/fast"))
"""

from __future__ import annotations

import io

from cifar_cnn.errors import ImageError
from cifar_cnn.images import open_image, to_model_size
from cifar_cnn.predict import Classifier, load


def prediction_figure(original, model_input, prediction, title: str = ""):
    """A matplotlib figure: the original, the 32x32 model input enlarged, and top-k bars."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(10, 3), gridspec_kw={"width_ratios": [1, 1, 1.6]})
    axes[0].imshow(original)
    axes[0].set_title("uploaded", fontsize=9)
    axes[1].imshow(model_input, interpolation="nearest")  # nearest: show the real 32x32 pixels
    axes[1].set_title("as the model sees it (32x32)", fontsize=9)
    for ax in axes[:2]:
        ax.axis("off")
    labels = [label for label, _ in prediction.top_k][::-1]
    scores = [score for _, score in prediction.top_k][::-1]
    colors = ["#b45309" if prediction.uncertain else "#2563eb"] * len(scores)
    axes[2].barh(labels, scores, color=colors)
    axes[2].set_xlim(0, 1)
    for y, s in enumerate(scores):
        axes[2].text(min(s + 0.02, 0.85), y, f"{s:.1%}", va="center", fontsize=9)
    verdict = f"{prediction.label} ({prediction.score:.1%})"
    if prediction.uncertain:
        verdict += "  uncertain: maybe none of these"
    axes[2].set_title(verdict, fontsize=10)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def render_prediction(clf: Classifier, data: bytes, name: str, top_k: int = 5) -> bytes:
    """PNG bytes of the prediction figure for one uploaded file. Raises ImageError."""
    import matplotlib

    matplotlib.use("Agg", force=False)  # works outside notebooks too (tests, scripts)
    import matplotlib.pyplot as plt

    image = open_image(data, name=name)
    small = to_model_size(image, clf.input_size)
    prediction = clf.predict(small, top_k=top_k)
    fig = prediction_figure(image, small, prediction, title=name)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()


def classifier_widget(model: Classifier | str | None = None, top_k: int = 5):
    """A VBox with a FileUpload (images, several at once) and an Output showing, for each
    upload, the image, the model's 32x32 view and the top-k probabilities."""
    import ipywidgets as widgets
    from IPython.display import Image

    clf = model if isinstance(model, Classifier) else load(model)
    upload = widgets.FileUpload(accept="image/*", multiple=True, description="Upload images")
    output = widgets.Output()
    clear = widgets.Button(description="Clear", icon="trash")
    accuracy = f", test accuracy {clf.accuracy:.1%}" if clf.accuracy else ""
    header = widgets.HTML(f"<b>{clf.name}</b>{accuracy}: {', '.join(clf.classes)}")

    def on_upload(change) -> None:
        # Outputs are appended explicitly (not captured with `with output:`), so they land in the
        # widget's model: they show in every frontend and can be checked from the kernel.
        for item in change["new"]:
            content = item["content"]
            data = content.tobytes() if isinstance(content, memoryview) else bytes(content)
            name = item.get("name", "upload")
            try:
                output.append_display_data(Image(data=render_prediction(clf, data, name, top_k)))
            except ImageError as exc:
                output.append_stdout(f"Could not read {name}: {exc}\n")

    def on_clear(_) -> None:
        output.clear_output()

    upload.observe(on_upload, names="value")
    clear.on_click(on_clear)
    box = widgets.VBox([header, widgets.HBox([upload, clear]), output])
    box.upload, box.output, box.classifier = upload, output, clf
    return box

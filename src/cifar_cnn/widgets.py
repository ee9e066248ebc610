"""Jupyter widgets: upload images, see what the model sees and what it says.

from cifar_cnn.widgets import classifier_widget
classifier_widget()          # bundled pretrained model; or classifier_widget(cifar_cnn.load("runs/fast"))

Works for any model (its own classes and input size come from its card). Figures are drawn with
matplotlib's object-oriented API (`matplotlib.figure.Figure`, no pyplot) straight to PNG bytes,
so the notebook's matplotlib backend is never switched or touched.
"""

from __future__ import annotations

import html
import io

from cifar_cnn.errors import ImageError
from cifar_cnn.predict import Classifier, Prediction, load

MAX_HEADER_CLASSES = 30  # the header lists at most this many class names, then "and N more"
_SHOWN_PIXELS = 512  # the uploaded image is drawn from a thumbnail this big: a 50 MP photo plots fast


def prediction_figure(original, model_input, prediction: Prediction, title: str = ""):
    """A matplotlib `Figure` (not attached to pyplot): the original, the model's S x S input
    enlarged, and the top-k bars."""
    from matplotlib.figure import Figure

    size = model_input.shape[0]
    fig = Figure(figsize=(10, 3))
    axes = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1, 1.6]})
    axes[0].imshow(original)
    axes[0].set_title("uploaded", fontsize=9)
    axes[1].imshow(model_input, interpolation="nearest")  # nearest: show the model's real pixels
    axes[1].set_title(f"as the model sees it ({size}x{size})", fontsize=9)
    for ax in axes[:2]:
        ax.axis("off")
    labels = [_short(label) for label, _ in prediction.top_k][::-1]
    scores = [score for _, score in prediction.top_k][::-1]
    colors = ["#b45309" if prediction.uncertain else "#2563eb"] * len(scores)
    axes[2].barh(range(len(scores)), scores, color=colors)
    axes[2].set_yticks(range(len(scores)), labels)  # positions, not labels: two classes may share a short name
    axes[2].set_xlim(0, 1)
    for y, s in enumerate(scores):
        axes[2].text(min(s + 0.02, 0.85), y, f"{s:.1%}", va="center", fontsize=9)
    verdict = f"{_short(prediction.label)} ({prediction.score:.1%})"
    if prediction.uncertain:
        verdict += f"  uncertain: {prediction.reason or 'maybe none of these'}"
    axes[2].set_title(verdict, fontsize=10)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def predict_upload(clf: Classifier, data: bytes, name: str, top_k: int = 5):
    """Decode one uploaded file once: (original image, model-size array, Prediction). Raises ImageError."""
    original, small = clf.view(data, name=name)
    prediction = clf.to_predictions(clf.predict_proba(small[None]), top_k)[0]
    prediction.filename = name
    return original, small, prediction


def figure_png(fig, dpi: int = 80) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)  # a pyplot-free Figure renders with Agg, whatever the backend
    return buf.getvalue()


def render_prediction(clf: Classifier, data: bytes, name: str, top_k: int = 5) -> bytes:
    """PNG bytes of the prediction figure for one uploaded file. Raises ImageError."""
    original, small, prediction = predict_upload(clf, data, name, top_k)
    return figure_png(prediction_figure(_thumbnail(original), small, prediction, title=name))


def header_html(clf: Classifier) -> str:
    """The model's name, input size, accuracy and classes, HTML-escaped."""
    card = clf.card
    accuracy = f", {card.accuracy_label} {card.accuracy:.1%}" if card.accuracy is not None else ""
    names = ", ".join(html.escape(c) for c in card.classes[:MAX_HEADER_CLASSES])
    if card.num_classes > MAX_HEADER_CLASSES:
        names += f" and {card.num_classes - MAX_HEADER_CLASSES} more"
    size = card.input_size
    return (f"<b>{html.escape(card.model)}</b> ({size}x{size} px input{accuracy}), "
            f"{card.num_classes} classes: {names}")  # fmt: skip


def classifier_widget(model: Classifier | str | None = None, top_k: int = 5):
    """A VBox with a FileUpload (images, several at once) and an Output showing, for each
    upload, the image, the model's own S x S view and the top-k probabilities.

    `box.results` collects `Prediction.to_dict()` of every image classified, in order."""
    import ipywidgets as widgets
    from IPython.display import Image

    clf = model if isinstance(model, Classifier) else load(model)
    upload = widgets.FileUpload(accept="image/*", multiple=True, description="Upload images")
    output = widgets.Output()
    clear = widgets.Button(description="Clear", icon="trash")
    header = widgets.HTML(header_html(clf))
    results: list[dict] = []

    def on_upload(change) -> None:
        # Outputs are appended explicitly (not captured with `with output:`), so they land in the
        # widget's model: they show in every frontend and can be checked from the kernel.
        for item in change["new"]:
            content = item["content"]
            data = content.tobytes() if isinstance(content, memoryview) else bytes(content)
            name = item.get("name", "upload")
            try:
                original, small, prediction = predict_upload(clf, data, name, top_k)
            except ImageError as exc:
                output.append_stdout(f"Could not read {name}: {exc}\n")
                continue
            fig = prediction_figure(_thumbnail(original), small, prediction, title=name)
            output.append_display_data(Image(data=figure_png(fig)))
            results.append(prediction.to_dict())

    def on_clear(_) -> None:
        output.clear_output()
        results.clear()

    upload.observe(on_upload, names="value")
    clear.on_click(on_clear)
    box = widgets.VBox([header, widgets.HBox([upload, clear]), output])
    box.upload, box.output, box.classifier, box.results = upload, output, clf, results
    return box


def _thumbnail(image):
    """Shrink (in place: the image was decoded for us) to at most _SHOWN_PIXELS a side, for drawing."""
    image.thumbnail((_SHOWN_PIXELS, _SHOWN_PIXELS))
    return image


def _short(label: str, n: int = 24) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"

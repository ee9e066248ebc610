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


def prediction_figure(original, model_input, prediction: Prediction, title: str = "", explanation=None):
    """A matplotlib `Figure` (not attached to pyplot): the original, the model's S x S input
    enlarged, with an `explain.Explanation` where the model found its answer, and the top-k bars."""
    from matplotlib.figure import Figure

    size = model_input.shape[0]
    pictures = 3 if explanation is not None else 2
    fig = Figure(figsize=(10 + 3 * (pictures - 2), 3))
    axes = fig.subplots(1, pictures + 1, gridspec_kw={"width_ratios": [1] * pictures + [1.6]})
    axes[0].imshow(original)
    axes[0].set_title("uploaded", fontsize=9)
    axes[1].imshow(model_input, interpolation="nearest")  # nearest: show the model's real pixels
    axes[1].set_title(f"as the model sees it ({size}x{size})", fontsize=9)
    if explanation is not None:
        axes[2].imshow(explanation.overlay())
        axes[2].set_title(f"where it found {_short(explanation.target, 16)} (red: most)", fontsize=9)
    for ax in axes[:pictures]:
        ax.axis("off")
    axes = [*axes[:2], axes[-1]]
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
    prediction = clf.predict_arrays(small[None], top_k)[0]
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
    return (f"<b>{html.escape(card.name)}</b> ({size}x{size} px input{accuracy}), "
            f"{card.num_classes} classes: {names}")  # fmt: skip


def classifier_widget(model: Classifier | str | None = None, top_k: int = 5, explain: bool = False):
    """A VBox with a FileUpload (images, several at once) and an Output showing, for each
    upload, the image, the model's own S x S view and the top-k probabilities; with the
    "Show why" box ticked (`explain=True` ticks it), also where the model found its answer.

    `box.results` collects `Prediction.to_dict()` of every image classified, in order."""
    import ipywidgets as widgets
    from IPython.display import Image

    clf = model if isinstance(model, Classifier) else load(model)
    upload = widgets.FileUpload(accept="image/*", multiple=True, description="Upload images")
    output = widgets.Output()
    clear = widgets.Button(description="Clear", icon="trash")
    why = widgets.Checkbox(value=explain, description="Show why", indent=False,
                           tooltip="a heatmap of where in the picture the model found its answer")  # fmt: skip
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
            explanation = clf.explain(data, prediction.label, name=name) if why.value else None
            fig = prediction_figure(_thumbnail(original), small, prediction, title=name, explanation=explanation)
            output.append_display_data(Image(data=figure_png(fig)))
            results.append(prediction.to_dict())

    def on_clear(_) -> None:
        output.clear_output()
        results.clear()

    upload.observe(on_upload, names="value")
    clear.on_click(on_clear)
    box = widgets.VBox([header, widgets.HBox([upload, clear, why]), output])
    box.upload, box.output, box.classifier, box.results, box.why = upload, output, clf, results, why
    return box


def _thumbnail(image):
    """Shrink (in place: the image was decoded for us) to at most _SHOWN_PIXELS a side, for drawing."""
    image.thumbnail((_SHOWN_PIXELS, _SHOWN_PIXELS))
    return image


def _short(label: str, n: int = 24) -> str:
    return label if len(label) <= n else label[: n - 1] + "…"


# ---- the studio in a notebook ------------------------------------------------------------------


def studio_widget(project: str = "my classifier", workdir=None, *, studio=None, classes=("Class 1", "Class 2"),
                  thumbnails: int = 16):  # fmt: skip
    """Teachable Machine in a notebook, over the same project folders as `cifar-cnn serve --studio`
    (`cifar_cnn.studio`): a row per class (name, FileUpload, thumbnails), a Train button with a
    progress bar, then per-class accuracy, the confusion matrix (click a cell for its images) and a
    test upload. Training runs in the studio's worker thread, so the notebook stays usable.

    Args:
        project: opened, or created with `classes` when it does not exist.
        workdir: the studio folder (default `studio.default_workdir()`); or pass a `Studio` as `studio`.
        thumbnails: newest images shown per class.

    The returned VBox has `model` (the trained `Classifier`, None before the first training),
    `train()` (queue a job; returns it), `wait(timeout)` (until the job has ended and is shown),
    `rows` (class name -> its row, with `name`, `upload`, `thumbs`), `confusion_buttons`
    ((actual, predicted) -> button), `test_upload`, `results` (the test uploads' `Prediction.to_dict()`),
    `studio` and `project` (the Python API).
    """
    import threading

    import ipywidgets as widgets

    from cifar_cnn.studio import Studio, StudioError

    studio = studio or Studio(workdir)
    proj = studio.open_or_create(project)
    if not proj.classes():
        for name in classes:
            proj.add_class(name)
    name = proj.name

    class StudioBox(widgets.VBox):
        @property
        def model(self) -> Classifier | None:
            return studio.classifier(name) if proj.has_model() else None

        def close(self):
            stop_listening()
            super().close()

    rows_box = widgets.VBox()
    add_class = widgets.Button(description="Add a class", icon="plus")
    train_button = widgets.Button(description="Train", icon="play", button_style="primary")
    cancel_button = widgets.Button(description="Cancel", icon="stop", disabled=True)
    progress = widgets.IntProgress(value=0, min=0, max=1, layout=widgets.Layout(width="320px"))
    status, message = widgets.HTML(), widgets.HTML()
    accuracy, per_class = widgets.HTML(), widgets.HTML()
    confusion, cell = widgets.GridBox(), widgets.VBox()
    test_upload = widgets.FileUpload(accept="image/*", multiple=True, description="Test images")
    test_output = widgets.Output()
    box = StudioBox([
        widgets.HTML(f"<b>Studio project {html.escape(name)}</b>: a folder of class folders in "
                     f"{html.escape(str(studio.workdir))}; images are re-encoded as they are added"),
        rows_box, add_class, widgets.HBox([train_button, cancel_button, progress]), status, message,
        accuracy, per_class, confusion, cell, widgets.HTML("<b>Try the model</b>"), test_upload, test_output,
    ])  # fmt: skip
    box.studio, box.project, box.rows, box.confusion_buttons = studio, proj, {}, {}
    box.test_upload, box.test_output, box.results, box.job = test_upload, test_output, [], None
    box.train_button, box.cancel_button, box.progress, box.status = train_button, cancel_button, progress, status
    settled = threading.Event()
    settled.set()

    def say(text: str, error: bool = False) -> None:
        message.value = f"<span style='color:#b91c1c'>{html.escape(text)}</span>" if error else html.escape(text)

    def show_thumbs(row) -> None:
        ids = proj.images(row.cls)
        folder = proj.class_dir(row.cls)
        shown = []
        for image_id in ids[::-1][:thumbnails]:
            data = _thumb_bytes(folder / image_id)
            if data:
                shown.append(widgets.Image(value=data, format="jpeg", width=48, height=48))
        more = len(ids) - len(shown)
        row.thumbs.children = shown + ([widgets.Label(f"and {more} more")] if more > 0 else [])
        row.count.value = f"{len(ids)} image{'s' * (len(ids) != 1)}"

    def make_row(cls: str):
        text = widgets.Text(value=cls, continuous_update=False, layout=widgets.Layout(width="200px"))
        upload = widgets.FileUpload(accept="image/*", multiple=True, description="Add images")
        delete = widgets.Button(description="Delete", icon="trash", layout=widgets.Layout(width="100px"))
        row = widgets.VBox([widgets.HBox([text, widgets.Label(), upload, delete]),
                            widgets.HBox(layout=widgets.Layout(flex_flow="row wrap"))])  # fmt: skip
        row.cls, row.name, row.upload = cls, text, upload
        row.count, row.thumbs = row.children[0].children[1], row.children[1]

        def on_rename(change) -> None:
            try:
                new = proj.rename_class(row.cls, change["new"])
            except StudioError as exc:
                say(str(exc), error=True)
                text.value = row.cls
                return
            box.rows[new] = box.rows.pop(row.cls)
            row.cls = new

        def on_upload(change) -> None:
            problems = []
            for item in change["new"]:
                content = item["content"]
                data = content.tobytes() if isinstance(content, memoryview) else bytes(content)
                try:
                    proj.add_image(row.cls, data, item.get("name", "upload"))
                except (ImageError, StudioError) as exc:
                    problems.append(str(exc))
            if change["new"]:
                say("; ".join(problems), error=True) if problems else say("")
                show_thumbs(row)

        def on_delete(_) -> None:
            try:
                proj.delete_class(row.cls)
            except StudioError as exc:
                return say(str(exc), error=True)
            box.rows.pop(row.cls, None)
            rows_box.children = [r for r in rows_box.children if r is not row]

        text.observe(on_rename, names="value")
        upload.observe(on_upload, names="value")
        delete.on_click(on_delete)
        box.rows[cls] = row
        show_thumbs(row)
        return row

    def on_add_class(_) -> None:
        existing = {c.casefold() for c in proj.classes()}
        i = len(existing) + 1
        while f"class {i}" in existing:
            i += 1
        try:
            rows_box.children = [*rows_box.children, make_row(proj.add_class(f"Class {i}"))]
        except StudioError as exc:
            say(str(exc), error=True)

    def train():
        say("")
        try:
            job = studio.train(name)
        except StudioError as exc:
            say(str(exc), error=True)
            return None
        settled.clear()
        box.job = job
        progress.value, progress.max, progress.bar_style = 0, 1, ""
        train_button.disabled, cancel_button.disabled = True, False
        return job

    def wait(timeout: float | None = None):
        if box.job is not None:
            box.job.wait(timeout)
        settled.wait(timeout)
        return box.job

    def on_event(event: dict) -> None:
        if event["project"] != name:
            return
        kind = event["type"]
        if kind == "queued":
            status.value = f"Queued: {event.get('position', 0)} job(s) ahead"
        elif kind in ("started", "phase", "cancelling"):
            status.value = html.escape(event["phase"].capitalize() + "...")
        elif kind == "epoch":
            progress.max, progress.value = event["epochs"], event["epoch"]
            val = f", validation accuracy {event['val_accuracy']:.1%}" if event.get("val_accuracy") is not None else ""
            status.value = (f"Epoch {event['epoch']} of {event['epochs']}: loss {event['loss']:.3f}, "
                            f"training accuracy {event['accuracy']:.1%}{val}")  # fmt: skip
        elif kind in ("done", "failed", "cancelled"):
            train_button.disabled, cancel_button.disabled = False, True
            if kind == "done":
                progress.value, progress.bar_style = progress.max, "success"
                status.value = f"Trained in {event['seconds']:.1f} s"
                show_results()
            elif kind == "failed":
                progress.bar_style = "danger"
                status.value = ""
                say(f"Training failed: {event['error']} (the project is as it was)", error=True)
            else:
                status.value = "Cancelled: the previous model, if any, is kept"
            settled.set()

    def show_results() -> None:
        evaluation = proj.evaluation()
        if evaluation is None:
            return
        accuracy.value = (f"<b>Accuracy {evaluation['accuracy']:.1%}</b> on {evaluation['images_evaluated']} "
                          f"{evaluation['split']} images (a fifth of each class, kept out of training); "
                          f"{evaluation['uncertain']} flagged uncertain")  # fmt: skip
        per_class.value = _per_class_html(evaluation)
        classes_ = evaluation["classes"]
        k = len(classes_)
        cells = [widgets.Label("actual \\ said")] + [widgets.Label(_short(c, 14)) for c in classes_]
        box.confusion_buttons = {}
        for i, actual in enumerate(classes_):
            cells.append(widgets.Label(_short(actual, 14)))
            for j, predicted in enumerate(classes_):
                n = evaluation["confusion"][i][j]
                button = widgets.Button(description=str(n), tooltip=f"{actual} called {predicted}",
                                        button_style="info" if i == j else ("danger" if n else ""),
                                        layout=widgets.Layout(width="auto"))  # fmt: skip
                button.on_click(lambda _, a=actual, p=predicted: show_cell(a, p))
                box.confusion_buttons[(actual, predicted)] = button
                cells.append(button)
        confusion.children = cells
        confusion.layout = widgets.Layout(grid_template_columns=f"repeat({k + 1}, minmax(60px, 110px))",
                                          grid_gap="2px")  # fmt: skip

    def show_cell(actual: str, predicted: str) -> None:
        items = []
        for im in proj.cell(actual, predicted):
            data = base64_data(im["thumbnail"])
            caption = f"{_short(im['label'], 14)} {im['score']:.0%}" + (" uncertain" if im["uncertain"] else "")
            picture = (
                widgets.Image(value=data, format="jpeg", width=64, height=64) if data else widgets.Label("removed")
            )
            items.append(widgets.VBox([picture, widgets.Label(caption)]))
        cell.children = [widgets.HTML(f"<b>Actual {html.escape(actual)}, the model said {html.escape(predicted)}:</b> "
                                      f"{len(items)} image(s)"),
                         widgets.HBox(items, layout=widgets.Layout(flex_flow="row wrap"))]  # fmt: skip

    def on_test_upload(change) -> None:
        from IPython.display import Image

        clf = box.model
        for item in change["new"]:
            item_name = item.get("name", "upload")
            if clf is None:
                test_output.append_stdout("Train the model first.\n")
                return
            content = item["content"]
            data = content.tobytes() if isinstance(content, memoryview) else bytes(content)
            try:
                original, small, prediction = predict_upload(clf, data, item_name)
            except ImageError as exc:
                test_output.append_stdout(f"Could not read {item_name}: {exc}\n")
                continue
            fig = prediction_figure(_thumbnail(original), small, prediction, title=item_name)
            test_output.append_display_data(Image(data=figure_png(fig)))
            box.results.append(prediction.to_dict())

    stop_listening = studio.queue.listen(on_event)
    add_class.on_click(on_add_class)
    train_button.on_click(lambda _: train())
    cancel_button.on_click(lambda _: studio.cancel(name))
    test_upload.observe(on_test_upload, names="value")
    rows_box.children = [make_row(c) for c in proj.classes()]
    box.train, box.wait = train, wait
    show_results()
    return box


def base64_data(url: str | None) -> bytes | None:
    """The bytes of a base64 `data:` URL (the studio's thumbnails), or None."""
    import base64

    if not url or "," not in url:
        return None
    return base64.b64decode(url.split(",", 1)[1])


def _thumb_bytes(path) -> bytes | None:
    from cifar_cnn.studio import thumbnail

    return base64_data(thumbnail(path))


def _per_class_html(evaluation: dict) -> str:
    rows = []
    for c in evaluation["per_class"]:
        acc = c["accuracy"] or 0.0
        bar = (f"<div style='background:#e5e7eb;width:160px;height:10px'><div style='background:#2563eb;"
               f"width:{160 * acc:.0f}px;height:10px'></div></div>")  # fmt: skip
        unc = f", {c['uncertain']} uncertain" if c["uncertain"] else ""
        rows.append(
            f"<tr><td>{html.escape(c['class'])}</td><td>{bar}</td><td>{acc:.0%} of {c['images']}{unc}</td></tr>"
        )
    return "<b>Accuracy per class</b><table>" + "".join(rows) + "</table>"

"""TensorBoard event files for a training run, written into its output folder beside the
checkpoint, so `tensorboard --logdir runs` shows one run per folder:

    runs/fast/events.out.tfevents.*   (beside checkpoint.safetensors and model.safetensors)

Per epoch, at global step = the epoch number (1, 2, ...): loss and accuracy of the training
batches (augmented) and of the monitored split (validation, or test on CIFAR-10), the learning
rate, images per second and the epoch's seconds. At the end, at the last epoch's step: the
confusion matrix and a grid of sample predictions on the final evaluation split as images, and
the recipe as hyperparameters with the final metrics (the HParams tab).

The log always matches the checkpoint: it is written afresh when a run starts, and a resumed
run rewrites it from the checkpoint's history before going on, so no epoch appears twice, even
one logged after the last checkpoint of a killed run. Logging never stops training: the first
failure (disk full, tensorboard not installed) is warned about once and logging stops.
"""

from __future__ import annotations

import contextlib
import io
import math
import time
import warnings
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

EVENT_FILES = "events.out.tfevents.*"
SAMPLE_IMAGES = 32  # images in the sample-predictions grid

# history key -> tag; grouped by metric ("loss/train", "loss/val") so TensorBoard shows the
# training and monitored curves of one metric side by side.
EPOCH_TAGS = {
    "train_loss": "loss/train",
    "train_accuracy": "accuracy/train",
    "val_loss": "loss/val",
    "val_accuracy": "accuracy/val",
    "test_loss": "loss/test",
    "test_accuracy": "accuracy/test",
    "lr": "learning_rate",
    "images_per_second": "speed/images_per_second",
    "seconds": "time/epoch_seconds",
}


class RunLog:
    """One run's TensorBoard log in `log_dir`; `history` (a resumed run's epochs) is written first.

    Every method is safe to call after a failure: it then does nothing.
    """

    def __init__(self, log_dir: str | Path, history: Iterable[dict] = ()) -> None:
        self.log_dir = Path(log_dir)
        self.seconds = 0.0  # spent logging: left out of the run's measured time, as monitoring is
        self._writer: Any = None
        self._failed = False
        self._guard(self._open, list(history), opening=True)

    @property
    def active(self) -> bool:
        return self._writer is not None

    def epoch(self, stats: dict) -> None:
        """Scalars of one epoch's stats (a `train_epoch` dict with its `epoch` number)."""
        self._guard(self._epoch, stats)

    def hparams(self, values: dict, metrics: dict[str, float], step: int) -> None:
        """The recipe (and run settings) as hyperparameters, with the final `metrics` by name."""
        self._guard(self._hparams, values, metrics, step)

    def final(self, confusion: np.ndarray, classes: list[str], images: np.ndarray, labels: np.ndarray,
              probs: np.ndarray, step: int, split: str = "test") -> None:  # fmt: skip
        """Confusion matrix (true, predicted) counts and a grid of sample predictions on `split`:
        uint8 images (N, S, S, 3) with labels (N,) and probabilities (N, classes)."""
        self._guard(self._final, confusion, classes, images, labels, probs, step, split)

    def close(self) -> None:
        self._guard(self._writer_close)

    # -- the work, run under _guard

    def _open(self, history: list[dict]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # imported only when logging: about a second

        for old in self.log_dir.glob(EVENT_FILES):  # a previous run's log, or this one's before a resume
            old.unlink()
        self._writer = SummaryWriter(str(self.log_dir))
        for stats in history:
            self._epoch(stats, flush=False)
        self._writer.flush()

    def _epoch(self, stats: dict, flush: bool = True) -> None:
        step = int(stats["epoch"])
        for key, tag in EPOCH_TAGS.items():
            value = stats.get(key)
            if value is not None and math.isfinite(value):
                self._writer.add_scalar(tag, value, step)
        if flush:
            self._writer.flush()  # a killed run keeps every finished epoch in its log

    def _hparams(self, values: dict, metrics: dict[str, float], step: int) -> None:
        from torch.utils.tensorboard.summary import hparams

        # Written into this run's own folder (SummaryWriter.add_hparams would make a subfolder per call).
        scalars = {f"hparam/{k}": float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}
        for summary in hparams(flat_hparams(values), scalars):  # experiment, session start, session end
            self._writer.file_writer.add_summary(summary, step)
        for tag, value in scalars.items():  # the HParams tab reads each metric from the scalar of its tag
            self._writer.add_scalar(tag, value, step)
        self._writer.flush()

    def _final(self, confusion: np.ndarray, classes: list[str], images: np.ndarray, labels: np.ndarray,
               probs: np.ndarray, step: int, split: str) -> None:  # fmt: skip
        # report.py's figures, drawn into memory instead of a PNG file: one look for both.
        from cifar_cnn.report import _confusion_figure, _image_grid, _short

        self._add_png("final/confusion_matrix", lambda buf: _confusion_figure(confusion, classes, buf), step)
        if len(images):
            # Evenly spaced rather than the first ones: a folder's images come sorted by class.
            idx = np.linspace(0, len(images) - 1, min(len(images), SAMPLE_IMAGES)).astype(int)
            predicted = probs.argmax(1)
            items = [(images[i], f"{_short(classes[predicted[i]])} {probs[i, predicted[i]]:.0%}\n"
                      f"true {_short(classes[labels[i]])}", "darkgreen" if predicted[i] == labels[i] else "darkred")
                     for i in idx]  # fmt: skip
            title = f"Sample predictions on the {split} split (green: right, red: wrong)"
            self._add_png("final/sample_predictions", lambda buf: _image_grid(items, buf, title), step)
        self._writer.flush()

    def _add_png(self, tag: str, draw: Callable[[io.BytesIO], Any], step: int) -> None:
        from PIL import Image

        buf = io.BytesIO()
        draw(buf)
        buf.seek(0)
        image = np.asarray(Image.open(buf).convert("RGB"))  # (H, W, 3) uint8
        self._writer.add_image(tag, image, step, dataformats="HWC")

    def _writer_close(self) -> None:
        writer, self._writer = self._writer, None
        writer.close()

    def _guard(self, fn: Callable[..., None], *args, opening: bool = False) -> None:
        """Run `fn` unless logging has stopped; on any error warn once and stop logging."""
        if self._failed or (self._writer is None and not opening):
            return
        t0 = time.perf_counter()
        try:
            fn(*args)
        except Exception as exc:  # disk full, unwritable folder, tensorboard missing: training goes on
            self._stop(exc)
        finally:
            self.seconds += time.perf_counter() - t0

    def _stop(self, exc: Exception) -> None:
        self._failed = True
        hint = " (pip install 'tensorboard>=2.16,<3')" if isinstance(exc, ImportError) else ""
        warnings.warn(f"TensorBoard logging to {self.log_dir} stopped: {type(exc).__name__}: {exc}{hint}; "
                      "training goes on without it", RuntimeWarning, stacklevel=4)  # fmt: skip
        writer, self._writer = self._writer, None
        if writer is not None:
            with contextlib.suppress(Exception):  # the same full disk may fail the close too
                writer.close()


def flat_hparams(values: dict, prefix: str = "") -> dict[str, float | int | str]:
    """Hyperparameters as the HParams tab takes them: numbers and strings (bools as 0/1, nested
    dicts as "outer.inner", anything else as its text)."""
    flat: dict[str, float | int | str] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, bool):
            flat[name] = int(value)
        elif isinstance(value, (int, float, str)):
            flat[name] = value
        elif value is not None:
            flat[name] = str(value)
    return flat


def tensorboard_command(log_dir: Path) -> str:
    """The command that shows this run beside its siblings (`runs/fast` -> `tensorboard --logdir runs`)."""
    import shlex

    return f"tensorboard --logdir {shlex.quote(str(log_dir.parent))}"


__all__ = ["EPOCH_TAGS", "RunLog", "flat_hparams", "tensorboard_command"]

"""The studio: make an image classifier as Teachable Machine does (classes, examples, one Train
button), on the project's own pipeline, with every project a plain folder on disk.

    studio = Studio()                                  # ~/.local/share/cifar-cnn/studio (or a folder)
    project = studio.create("pets")
    project.add_class("cat")
    project.add_image("cat", open("tom.jpg", "rb").read())   # decoded, re-encoded as a clean PNG
    job = studio.train("pets")                         # queued; one training job at a time per Studio
    job.wait()
    studio.classifier("pets").predict("photo.jpg")     # the trained model, as soon as the job is done

A project folder holds:

    <workdir>/<project>/project.json            name, created, the last training job's outcome
    <workdir>/<project>/images/<class>/*.png    a labelled folder: `cifar-cnn train --data <project>/images`
    <workdir>/<project>/model/                  model.safetensors, labels.txt, evaluation.json
                                                (model.onnx once exported)

The images live in `images/` rather than beside `project.json` and `model/`, so the folder the
library reads holds class folders only (a `model/` folder there would be read as a class).

Training is `cifar_cnn.train("fast", data=..., init="auto")`, the call behind `cifar-cnn train
--data`: it fine-tunes the bundled weights with the schedule fitted to the data. The folder is read
once by `datasets.image_folder` (in this process: no worker processes forked from a server), and
the same data set's validation split (20% of each class, never trained on) gives the per-class
accuracy, the confusion matrix with the images behind each cell, and the uncertain flags. A job
trains into `<project>/.training/` and replaces `model/` only when it succeeds, so a failed or
cancelled job leaves the project as it was. This module holds no HTTP: `serve/studio.py` puts a
web API over it and `widgets.studio_widget` a notebook UI.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import secrets
import shutil
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from cifar_cnn.datasets import IGNORED, MIN_IMAGES_PER_CLASS, SPLIT_FOLDERS, ImageDataset, image_folder
from cifar_cnn.errors import CifarCnnError
from cifar_cnn.images import KEEP, MAX_PIXELS, open_image

log = logging.getLogger("cifar_cnn.studio")

RECIPE = "fast"  # fine-tuned from the bundled `fast` weights (init="auto" on small folders)
IMAGE_SIZE = 32  # the model's input size; images are stored larger (STORED_SIDE) for later choices
STORED_SIDE = 256  # stored images: shorter side at most this many pixels (the model sees 32)
MAX_ASPECT = 4  # and the longer side at most 4x the shorter (the centre; training crops the centre anyway)
THUMB_SIDE = 96
NAME_MAX_CHARS = 64
NAME_MAX_BYTES = 200  # UTF-8 bytes: file systems allow 255 per name
META_NAME = "project.json"
IMAGES_DIR, MODEL_DIR, TRAINING_DIR, OLD_MODEL_DIR = "images", "model", ".training", ".old-model"
MODEL_FILE, LABELS_FILE, EVALUATION_FILE, ONNX_FILE = "model.safetensors", "labels.txt", "evaluation.json", "model.onnx"
EXPORTS = {"safetensors": MODEL_FILE, "onnx": ONNX_FILE, "labels": LABELS_FILE}
_FORBIDDEN_CHARS = set('/\\:*?"<>|')
# Names a folder cannot take: split folders (a class "train" would turn the folder into a train/ val/
# layout), files the library ignores, and Windows' device names.
_RESERVED = set(SPLIT_FOLDERS) | IGNORED | {"con", "prn", "aux", "nul"} | {f"{d}{i}" for d in ("com", "lpt")
                                                                               for i in range(1, 10)}  # fmt: skip
_EVENTS_KEPT = 500  # per project: enough for a run's epochs; older ones are dropped


class StudioError(CifarCnnError):
    """A studio request that cannot be done as asked. `kind` says why, for HTTP status codes:
    "invalid" (a bad name or request), "not_found", "conflict" (exists already, or busy training),
    "too_large" (an image over its limit), "project_full" (images or classes per project), "full" (the
    studio's disk budget),
    "unavailable" (a missing optional package)."""

    def __init__(self, message: str, kind: str = "invalid"):
        super().__init__(message)
        self.kind = kind


class TrainingCancelled(Exception):
    """Raised from the per-epoch hook to stop a job the user cancelled."""


@dataclass(frozen=True)
class Limits:
    """What one studio may hold; each limit reached is refused with a message that says which."""

    images_per_project: int = 5000
    bytes_per_image: int = 10 * 2**20  # an upload as sent, before it is decoded
    total_bytes: int = 2 * 2**30  # everything under the workdir: images, models, exports
    classes_per_project: int = 100
    projects: int = 200
    max_pixels: int = MAX_PIXELS

    def to_dict(self) -> dict:
        return dict(self.__dict__)


def default_workdir() -> Path:
    """Where projects live by default: $XDG_DATA_HOME/cifar-cnn/studio (~/.local/share/cifar-cnn/studio),
    the data-folder twin of `data.cache_dir()`."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "cifar-cnn" / "studio"


def check_name(name: object, what: str = "class") -> str:
    """A project or class name made safe to be a folder name: NFC, trimmed, any Unicode letters, but no
    path separators or characters Windows refuses, no leading dot, no reserved names. Raises StudioError."""
    if not isinstance(name, str):
        raise StudioError(f"a {what} name must be text")
    name = unicodedata.normalize("NFC", name).strip()
    if not name:
        raise StudioError(f"a {what} name cannot be empty")
    if len(name) > NAME_MAX_CHARS or len(name.encode()) > NAME_MAX_BYTES:
        raise StudioError(f"{what} name is too long: at most {NAME_MAX_CHARS} characters")
    if name.startswith((".", "~$")):  # hidden, or an Office lock file: the library would skip the folder
        raise StudioError(f"a {what} name cannot start with a dot or ~$")
    bad = sorted({c for c in name if c in _FORBIDDEN_CHARS or not c.isprintable()})
    if bad:
        shown = " ".join(c if c.isprintable() else f"U+{ord(c):04X}" for c in bad)
        raise StudioError(f'a {what} name cannot hold {shown} (nor / \\ : * ? " < > |)')
    if name.endswith("."):
        raise StudioError(f"a {what} name cannot end with a dot")
    if name.casefold() in _RESERVED:
        raise StudioError(f"{name!r} is a reserved name: choose another {what} name")
    return name


def _visible(path: Path) -> bool:
    return not path.name.startswith(".") and path.name.lower() not in IGNORED and not path.is_symlink()


def reencode(data: bytes, name: str = "image", *, max_bytes: int, max_pixels: int = MAX_PIXELS) -> bytes:
    """An upload decoded (any format `predict` reads, EXIF orientation applied, alpha over white)
    and written anew as a PNG of its pixels only: no metadata, no trailing bytes, nothing of the
    file as given. Shrunk to a shorter side of at most STORED_SIDE. Raises ImageError."""
    image = open_image(data, name=name, max_bytes=max_bytes, max_pixels=max_pixels, target_size=STORED_SIDE // KEEP)
    w, h = image.size
    if max(w, h) > MAX_ASPECT * min(w, h):  # a panorama: keep its centre, as training would
        cw, ch = min(w, MAX_ASPECT * h), min(h, MAX_ASPECT * w)
        image = image.crop(((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch))
        w, h = image.size
    if min(w, h) > STORED_SIDE:
        scale = STORED_SIDE / min(w, h)
        image = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BICUBIC,
                             reducing_gap=3.0)  # fmt: skip
    clean = Image.fromarray(np.asarray(image.convert("RGB")))  # a new image: no info dict, no EXIF, no ICC
    buf = io.BytesIO()
    clean.save(buf, "PNG", compress_level=6)
    return buf.getvalue()


@functools.lru_cache(maxsize=8192)
def _thumbnail(path: str, mtime_ns: int, size: int) -> str:
    """A small JPEG data URL of an image file (square, centre crop); cached by path and mtime."""
    with Image.open(path) as image:
        image.draft("RGB", (size * 2, size * 2))
        thumb = ImageOps.fit(ImageOps.exif_transpose(image).convert("RGB"), (size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    thumb.save(buf, "JPEG", quality=82)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def thumbnail(path: Path, size: int = THUMB_SIDE) -> str | None:
    """`_thumbnail` of a file, or None when it is gone or unreadable."""
    try:
        return _thumbnail(str(path), path.stat().st_mtime_ns, size)
    except (OSError, ValueError, Image.DecompressionBombError):
        return None


# ---- training jobs -----------------------------------------------------------------------------


@dataclass
class Job:
    """One training request. `status`: queued, running, done, failed or cancelled."""

    id: str
    project: str
    status: str = "queued"
    phase: str = "queued"  # queued, reading images, training, evaluating, done...
    error: str | None = None
    epoch: int = 0
    epochs: int = 0
    history: list[dict] = field(default_factory=list)
    result: dict = field(default_factory=dict)  # accuracy, train_seconds... when done
    submitted: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event, repr=False)
    done_event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def wait(self, timeout: float | None = None) -> Job:
        """Block until the job has ended (or `timeout` seconds passed); returns the job."""
        self.done_event.wait(timeout)
        return self

    def to_dict(self) -> dict:
        end = self.finished or time.time()
        return {"id": self.id, "project": self.project, "status": self.status, "phase": self.phase,
                "error": self.error, "epoch": self.epoch, "epochs": self.epochs, "history": self.history,
                "result": self.result, "submitted": self.submitted, "started": self.started,
                "finished": self.finished, "seconds": round(end - self.submitted, 2)}  # fmt: skip


class TrainingQueue:
    """One worker thread runs the jobs one at a time, in order; the others wait in the queue.

    Every change is published as an event (a dict with an increasing `id`) to the project's event
    log, read with `events(project, after)` (the web page's server-sent events) or pushed to
    `listen(fn)` callbacks (the notebook widget)."""

    def __init__(self, runner: Callable[[Job], dict], on_finish: Callable[[Job], None] | None = None):
        self._runner, self._on_finish = runner, on_finish
        self._pending: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}  # project -> its latest job
        self._events: dict[str, deque[dict]] = {}
        self._listeners: list[Callable[[dict], None]] = []
        self._outbox: deque[dict] = deque()  # events not yet handed to the listeners
        self._seq = 0
        self._cond = threading.Condition()
        self._delivering = threading.Lock()  # listeners get the events in order, one at a time
        self._thread: threading.Thread | None = None

    def submit(self, project: str) -> Job:
        """Queue a job for `project`. Raises StudioError (conflict) if it has one queued or running."""
        with self._cond:
            current = self._jobs.get(project)
            if current is not None and current.active:
                raise StudioError(f"project {project!r} is already training: wait for it or cancel it", "conflict")
            job = Job(id=secrets.token_hex(6), project=project)
            self._jobs[project] = job
            self._pending.append(job)
            self._publish(job, "queued", position=len(self._pending) + self._running_count() - 1)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._work, name="cifar-cnn-studio-training", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        self._deliver()
        return job

    def cancel(self, project: str) -> Job | None:
        """Cancel the project's queued or running job (a running one stops after its current epoch)."""
        with self._cond:
            job = self._jobs.get(project)
            if job is None or not job.active:
                return job
            job.cancel_requested.set()
            queued = job.status == "queued"
            if queued:
                self._pending.remove(job)
                self._finish(job, "cancelled")
            else:
                job.phase = "cancelling"
                self._publish(job, "cancelling")
        self._deliver()
        if queued:
            self._ended(job)
        return job

    def job(self, project: str) -> Job | None:
        with self._cond:
            return self._jobs.get(project)

    def active(self, project: str) -> bool:
        job = self.job(project)
        return job is not None and job.active

    def forget(self, project: str) -> None:
        with self._cond:
            self._jobs.pop(project, None)
            self._events.pop(project, None)

    def events(self, project: str, after: int = 0) -> list[dict]:
        """The project's events with an id above `after`, oldest first."""
        with self._cond:
            return [e for e in self._events.get(project, ()) if e["id"] > after]

    def listen(self, fn: Callable[[dict], None]) -> Callable[[], None]:
        """Call `fn(event)` for every event, in order; returns a function that stops it. `fn` runs in
        the thread that made the event (often the training thread), outside the queue's lock."""
        with self._cond:
            self._listeners.append(fn)

        def stop() -> None:
            with self._cond, contextlib.suppress(ValueError):
                self._listeners.remove(fn)

        return stop

    def progress(self, job: Job, kind: str, **values) -> None:
        """Publish an event of a running job (the runner's progress); `phase=` also sets its phase."""
        with self._cond:
            if "phase" in values:
                job.phase = values.pop("phase")
            self._publish(job, kind, **values)
        self._deliver()

    # -- inside the queue --

    def _running_count(self) -> int:
        return sum(1 for j in self._jobs.values() if j.status == "running")

    def _publish(self, job: Job, kind: str, **values) -> None:
        """Record an event (callers hold the lock, then call `_deliver` once they let it go)."""
        self._seq += 1
        event = {"id": self._seq, "type": kind, "job": job.id, "project": job.project, "status": job.status,
                 "phase": job.phase, "time": time.time(), **values}  # fmt: skip
        self._events.setdefault(job.project, deque(maxlen=_EVENTS_KEPT)).append(event)
        self._outbox.append(event)
        self._cond.notify_all()

    def _deliver(self) -> None:
        with self._delivering:
            while True:
                with self._cond:
                    if not self._outbox:
                        return
                    event, listeners = self._outbox.popleft(), list(self._listeners)
                for fn in listeners:
                    try:
                        fn(event)
                    except Exception:  # a listener's bug must not stop training
                        log.exception("studio event listener failed")

    def _finish(self, job: Job, status: str, error: str | None = None, **values) -> None:
        job.status, job.error, job.finished = status, error, time.time()
        job.phase = status
        self._publish(job, status, error=error, seconds=round(job.finished - job.submitted, 2), **values)
        for i, waiting in enumerate(self._pending):  # the others move up the queue
            self._publish(waiting, "queued", position=i + self._running_count())

    def _ended(self, job: Job) -> None:
        """After a job's last event reached the listeners: record it, then release `Job.wait`."""
        if self._on_finish is not None:
            try:
                self._on_finish(job)
            except Exception:
                log.exception("studio: recording the end of job %s failed", job.id)
        job.done_event.set()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._cond.wait()
                job = self._pending.popleft()
                job.status, job.started, job.phase = "running", time.time(), "starting"
                self._publish(job, "started")
            self._deliver()
            status, error, result = "done", None, {}
            try:
                result = self._runner(job)
            except TrainingCancelled:
                status = "cancelled"
            except CifarCnnError as exc:
                status, error = "failed", str(exc)
            except Exception as exc:  # any failure ends this job only; the queue goes on
                log.exception("studio training job %s of %r failed", job.id, job.project)
                status, error = "failed", f"training failed: {type(exc).__name__}: {exc}"
            with self._cond:
                job.result = result
                self._finish(job, status, error, **({"result": result} if result else {}))
            self._deliver()
            self._ended(job)


# ---- projects ----------------------------------------------------------------------------------


class Studio:
    """The projects under one folder, and the queue that trains them (one job at a time).

    Thread-safe: a web server's request threads and the training thread share one Studio. One
    Studio (one process) per folder at a time is assumed."""

    def __init__(self, workdir: str | os.PathLike | None = None, limits: Limits | None = None):
        self.workdir = Path(workdir).expanduser() if workdir else default_workdir()
        self.limits = limits or Limits()
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StudioError(f"cannot create the studio folder {self.workdir}: {exc.strerror or exc}") from exc
        self.root = self.workdir.resolve()
        self.lock = threading.RLock()  # folders and project.json
        self._model_locks: dict[str, threading.Lock] = {}  # per project: model/ swaps and exports
        self._classifiers: dict[str, tuple[int, object]] = {}  # project -> (model file mtime, Classifier)
        self._usage: int | None = None  # bytes under the workdir, counted lazily, then kept up to date
        self.queue = TrainingQueue(self._run_job, self._record_job)
        self._recover()

    # -- projects --

    def projects(self) -> list[str]:
        """Names of the projects (folders holding images/), sorted."""
        found = []
        with contextlib.suppress(OSError):
            for p in self.root.iterdir():
                if p.is_dir() and _visible(p) and ((p / IMAGES_DIR).is_dir() or (p / META_NAME).is_file()):
                    found.append(unicodedata.normalize("NFC", p.name))
        return sorted(found)

    def create(self, name: str) -> Project:
        name = check_name(name, "project")
        with self.lock:
            if self._existing(self.root, name) is not None:
                raise StudioError(f"a project named {name!r} exists already", "conflict")
            if len(self.projects()) >= self.limits.projects:
                raise StudioError(f"the studio holds {self.limits.projects} projects, its limit: delete one first",
                                  "too_large")  # fmt: skip
            self._check_disk(0)
            path = self._inside(self.root / name)
            (path / IMAGES_DIR).mkdir(parents=True)
            project = Project(self, name, path)
            project.write_meta({"name": name, "created": time.time(), "last_job": None})
            return project

    def open(self, name: str) -> Project:
        """The project of this name. Raises StudioError (not_found)."""
        name = check_name(name, "project")
        path = self._existing(self.root, name)
        if path is None or not ((path / IMAGES_DIR).is_dir() or (path / META_NAME).is_file()):
            raise StudioError(f"no project named {name!r}", "not_found")
        project = Project(self, path.name, self._inside(path))
        project.images_dir.mkdir(exist_ok=True)
        return project

    def open_or_create(self, name: str) -> Project:
        with self.lock:
            try:
                return self.open(name)
            except StudioError as exc:
                if exc.kind != "not_found":
                    raise
                return self.create(name)

    def delete(self, name: str) -> None:
        project = self.open(name)
        with self.lock:
            self._refuse_if_training(project.name)
            shutil.rmtree(project.path)
            self._classifiers.pop(project.name, None)
            self.queue.forget(project.name)
            self._usage = None

    def info(self, name: str) -> dict:
        return self.open(name).info()

    # -- training --

    def train(self, name: str) -> Job:
        """Queue a training job for the project, after checking it can be trained. Raises StudioError."""
        project = self.open(name)
        project.check_trainable()
        self._check_disk(0)
        job = self.queue.submit(project.name)
        project.update_meta(last_job=_job_summary(job))
        return job

    def cancel(self, name: str) -> Job | None:
        """Cancel the project's job: at once when queued, after the current epoch when running."""
        return self.queue.cancel(self.open(name).name)

    def _record_job(self, job: Job) -> None:
        """The job's outcome in project.json (shown after a restart)."""
        with contextlib.suppress(StudioError, OSError, CifarCnnError):
            self.open(job.project).update_meta(last_job=_job_summary(job))

    def classifier(self, name: str):
        """The project's trained `Classifier` (cached; replaced as soon as a new model is in place).
        Raises StudioError (conflict) when the project has no model yet."""
        from cifar_cnn.predict import load

        project = self.open(name)
        path = project.model_dir / MODEL_FILE
        try:
            mtime = path.stat().st_mtime_ns
        except OSError:
            raise StudioError(f"project {project.name!r} has no trained model yet: add images to each class and "
                              "press Train", "conflict") from None  # fmt: skip
        cached = self._classifiers.get(project.name)
        if cached is None or cached[0] != mtime:
            with self._model_lock(project.name):
                cached = (mtime, load(path))
                self._classifiers[project.name] = cached
        return cached[1]

    def _run_job(self, job: Job) -> dict:
        """`_train` a job's project; its errors are told without the studio folder's path."""
        try:
            return self._train(job)
        except TrainingCancelled:
            raise
        except (CifarCnnError, OSError) as exc:
            message = str(exc) if isinstance(exc, CifarCnnError) else f"training failed: {exc.strerror or exc}"
            for prefix in (f"{self.root}{os.sep}", f"{self.workdir}{os.sep}", str(self.root), str(self.workdir)):
                message = message.replace(prefix, "")
            raise StudioError(message) from exc

    def _train(self, job: Job) -> dict:
        """Train a project into .training/, evaluate it, then put it in place of model/ (the worker thread)."""
        from cifar_cnn.predict import load
        from cifar_cnn.train import CHECKPOINT_NAME, train

        project = self.open(job.project)
        self.queue.progress(job, "phase", phase="reading images")
        if job.cancel_requested.is_set():
            raise TrainingCancelled
        ds = project.dataset()
        files_sha = project.files_sha()
        work = project.path / TRAINING_DIR
        shutil.rmtree(work, ignore_errors=True)

        def on_epoch(stats: dict) -> None:
            job.epoch, job.epochs = int(stats["epoch"]), int(stats["epochs"])
            row = {"epoch": job.epoch, "epochs": job.epochs, "loss": stats["train_loss"],
                   "accuracy": stats["train_accuracy"], "val_accuracy": stats.get("val_accuracy"),
                   "val_loss": stats.get("val_loss"), "seconds": stats.get("seconds")}  # fmt: skip
            job.history.append(row)
            self.queue.progress(job, "epoch", phase="training", **row)
            if job.cancel_requested.is_set():
                raise TrainingCancelled

        self.queue.progress(job, "phase", phase="training")
        try:
            result = train(RECIPE, data=ds, init="auto", out_dir=work, progress=False, tensorboard=False,
                           on_epoch=on_epoch)  # fmt: skip
            self.queue.progress(job, "phase", phase="evaluating")
            clf = load(work / MODEL_FILE)
            evaluation = evaluate(clf, ds) | {
                "files_sha": files_sha, "trained_at": time.time(), "train_seconds": round(result.train_seconds, 2),
                "total_seconds": round(result.total_seconds, 2), "epochs": job.epochs, "init": result.card.init,
                "train_images": len(ds.train_x), "recipe": result.card.recipe}  # fmt: skip
            (work / CHECKPOINT_NAME).unlink(missing_ok=True)  # the studio never resumes: save the space
            (work / EVALUATION_FILE).write_text(json.dumps(evaluation, ensure_ascii=False))
            (work / LABELS_FILE).write_text("".join(f"{c}\n" for c in clf.classes), encoding="utf-8")
            with self._model_lock(project.name), self.lock:
                old = project.path / OLD_MODEL_DIR
                shutil.rmtree(old, ignore_errors=True)
                if project.model_dir.exists():
                    project.model_dir.rename(old)
                work.rename(project.model_dir)
                shutil.rmtree(old, ignore_errors=True)
                self._classifiers[project.name] = ((project.model_dir / MODEL_FILE).stat().st_mtime_ns, clf)
                self._usage = None
        except BaseException:
            shutil.rmtree(work, ignore_errors=True)
            raise
        finally:
            self._usage = None
        return {"accuracy": evaluation["accuracy"], "train_seconds": evaluation["train_seconds"],
                "total_seconds": evaluation["total_seconds"], "epochs": job.epochs, "classes": clf.classes}  # fmt: skip

    # -- bookkeeping --

    def usage(self) -> int:
        """Bytes of every file under the workdir."""
        with self.lock:
            if self._usage is None:
                total = 0
                for dirpath, _, files in os.walk(self.root):
                    for f in files:
                        with contextlib.suppress(OSError):
                            total += os.lstat(os.path.join(dirpath, f)).st_size
                self._usage = total
            return self._usage

    def _account(self, delta: int) -> None:
        with self.lock:
            if self._usage is not None:
                self._usage += delta

    def _check_disk(self, adding: int) -> None:
        used, limit = self.usage(), self.limits.total_bytes
        if used + adding > limit:
            raise StudioError(f"the studio's folder is full: {_size(used)} used of its {_size(limit)} limit; "
                              "delete images, classes or projects to make room", "full")  # fmt: skip

    def _refuse_if_training(self, name: str) -> None:
        if self.queue.active(name):
            raise StudioError(f"project {name!r} is training: wait for the job to end or cancel it", "conflict")

    def _model_lock(self, name: str) -> threading.Lock:
        with self.lock:
            return self._model_locks.setdefault(name, threading.Lock())

    def _inside(self, path: Path) -> Path:
        """`path`, after checking it lies inside the workdir (no link or name leads out of it)."""
        resolved = path.resolve()
        if resolved.parent != self.root and self.root not in resolved.parents:
            raise StudioError("that name leads outside the studio's folder", "invalid")
        return path

    @staticmethod
    def _existing(folder: Path, name: str) -> Path | None:
        """The entry of `folder` whose name is `name` (compared NFC and case-folded, as macOS and
        Windows compare), or None."""
        key = unicodedata.normalize("NFC", name).casefold()
        with contextlib.suppress(OSError):
            for p in folder.iterdir():
                if _visible(p) and unicodedata.normalize("NFC", p.name).casefold() == key:
                    return p
        return None

    def _recover(self) -> None:
        """After a restart: drop half-trained folders and mark jobs the restart interrupted."""
        for name in self.projects():
            with contextlib.suppress(OSError, StudioError):
                project = self.open(name)
                shutil.rmtree(project.path / TRAINING_DIR, ignore_errors=True)
                shutil.rmtree(project.path / OLD_MODEL_DIR, ignore_errors=True)
                last = project.meta().get("last_job") or {}
                if last.get("status") in ("queued", "running"):
                    project.update_meta(last_job=last | {"status": "failed", "error": "the server stopped before "
                                                         "this job ended: press Train again"})  # fmt: skip


def _job_summary(job: Job) -> dict:
    """What project.json keeps of a job (the page shows it after a restart)."""
    seconds = round(job.finished - job.submitted, 2) if job.finished else None
    return {"id": job.id, "status": job.status, "error": job.error, "submitted": job.submitted,
            "finished": job.finished, "seconds": seconds, "result": job.result}  # fmt: skip


def _size(n: float) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Project:
    """One project folder. Get it from `Studio.create` / `Studio.open`; every method checks its
    names and keeps to the project's folder."""

    def __init__(self, studio: Studio, name: str, path: Path):
        self.studio, self.name, self.path = studio, unicodedata.normalize("NFC", name), path

    @property
    def images_dir(self) -> Path:
        return self.path / IMAGES_DIR

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    # -- metadata --

    def meta(self) -> dict:
        try:
            meta = json.loads((self.path / META_NAME).read_text(encoding="utf-8"))
            return meta if isinstance(meta, dict) else {}
        except (OSError, ValueError):
            return {"name": self.name}

    def write_meta(self, meta: dict) -> None:
        from cifar_cnn.checkpoint import atomic_write_bytes

        atomic_write_bytes(self.path / META_NAME, json.dumps(meta, ensure_ascii=False, indent=1).encode())

    def update_meta(self, **changes) -> None:
        with self.studio.lock:
            self.write_meta(self.meta() | changes)

    # -- classes --

    def classes(self) -> list[str]:
        """Class names (folder names, NFC), sorted as the model's class indices are."""
        with contextlib.suppress(OSError):
            return sorted(unicodedata.normalize("NFC", p.name) for p in self.images_dir.iterdir()
                          if p.is_dir() and _visible(p))  # fmt: skip
        return []

    def class_dir(self, name: str) -> Path:
        """The folder of an existing class. Raises StudioError (not_found)."""
        name = check_name(name)
        path = self.studio._existing(self.images_dir, name)
        if path is None or not path.is_dir():
            raise StudioError(f"project {self.name!r} has no class {name!r}", "not_found")
        return self.studio._inside(path)

    def add_class(self, name: str) -> str:
        name = check_name(name)
        with self.studio.lock:
            self.studio._refuse_if_training(self.name)
            if self.studio._existing(self.images_dir, name) is not None:
                raise StudioError(f"class {name!r} exists already", "conflict")
            if len(self.classes()) >= self.studio.limits.classes_per_project:
                raise StudioError(f"a project holds at most {self.studio.limits.classes_per_project} classes",
                                  "project_full")  # fmt: skip
            self.studio._inside(self.images_dir / name).mkdir(parents=True)
        return name

    def rename_class(self, old: str, new: str) -> str:
        new = check_name(new)
        with self.studio.lock:
            self.studio._refuse_if_training(self.name)
            source = self.class_dir(old)
            other = self.studio._existing(self.images_dir, new)
            if other is not None and other != source:
                raise StudioError(f"class {new!r} exists already", "conflict")
            target = self.studio._inside(self.images_dir / new)
            step = source.with_name(f".rename-{secrets.token_hex(4)}")  # a case-only rename on macOS/Windows
            source.rename(step)
            step.rename(target)
        return new

    def delete_class(self, name: str) -> None:
        with self.studio.lock:
            self.studio._refuse_if_training(self.name)
            shutil.rmtree(self.class_dir(name))
            self.studio._usage = None

    # -- images --

    def images(self, cls: str) -> list[str]:
        """Image ids (file names) of a class, oldest first."""
        folder = self.class_dir(cls)
        entries = []
        with contextlib.suppress(OSError):
            for p in folder.iterdir():
                if p.is_file() and _visible(p):
                    entries.append((p.stat().st_mtime_ns, p.name))
        return [name for _, name in sorted(entries)]

    def count(self) -> dict[str, int]:
        out = {}
        for c in self.classes():
            with contextlib.suppress(StudioError):
                out[c] = len(self.images(c))
        return out

    def add_image(self, cls: str, data: bytes, filename: str = "image") -> str:
        """Decode an upload, re-encode it as a PNG into the class's folder; returns its id.

        Raises ImageError (not an image, damaged, too many pixels...) or StudioError (a limit)."""
        limits = self.studio.limits
        if len(data) > limits.bytes_per_image:
            raise StudioError(f"{filename}: {_size(len(data))} is over the {_size(limits.bytes_per_image)} limit "
                              "per image", "too_large")  # fmt: skip
        folder = self.class_dir(cls)
        self.studio._refuse_if_training(self.name)
        png = reencode(data, filename, max_bytes=limits.bytes_per_image, max_pixels=limits.max_pixels)
        with self.studio.lock:
            self.studio._refuse_if_training(self.name)
            total = sum(self.count().values())
            if total >= limits.images_per_project:
                raise StudioError(f"project {self.name!r} holds {total} images, the limit per project: remove some "
                                  "before adding more", "project_full")  # fmt: skip
            self.studio._check_disk(len(png))
            image_id = f"{time.time_ns() // 1000:016d}-{secrets.token_hex(4)}.png"  # sorts by capture time
            from cifar_cnn.checkpoint import atomic_write_bytes

            try:
                atomic_write_bytes(folder / image_id, png)
            except CifarCnnError as exc:
                raise StudioError(f"could not store {filename}: the disk may be full", "full") from exc
            self.studio._account(len(png))
        return image_id

    def image_path(self, cls: str, image_id: str) -> Path:
        """The file of an image. Raises StudioError (not_found) for an id that is not one of the class's."""
        folder = self.class_dir(cls)
        if not isinstance(image_id, str) or "/" in image_id or "\\" in image_id or image_id.startswith("."):
            raise StudioError(f"no image {image_id!r} in class {cls!r}", "not_found")
        path = folder / image_id
        if not path.is_file() or path.is_symlink():
            raise StudioError(f"no image {image_id!r} in class {cls!r}", "not_found")
        return self.studio._inside(path)

    def remove_image(self, cls: str, image_id: str) -> None:
        with self.studio.lock:
            self.studio._refuse_if_training(self.name)
            path = self.image_path(cls, image_id)
            size = path.stat().st_size
            path.unlink()
            self.studio._account(-size)

    def thumbnails(self, cls: str, limit: int | None = None) -> list[dict]:
        """[{"id", "thumbnail": data URL}] of a class's images, newest first."""
        folder = self.class_dir(cls)
        ids = self.images(cls)[::-1][:limit]
        return [{"id": i, "thumbnail": thumbnail(folder / i)} for i in ids]

    def files_sha(self) -> str:
        """Identifies the set of images (class/file names): tells a model trained on older images."""
        names = []
        for c in self.classes():
            with contextlib.suppress(StudioError):
                names += [f"{c}/{i}" for i in self.images(c)]
        return hashlib.sha256("\n".join(names).encode()).hexdigest()

    # -- training and the model --

    def check_trainable(self) -> None:
        """Raises StudioError (invalid) unless there are 2+ classes with 2+ images each."""
        counts = self.count()
        if len(counts) < 2:
            raise StudioError(f"add at least 2 classes to train (the project has {len(counts)})")
        small = [f"{c!r} ({n})" for c, n in counts.items() if n < MIN_IMAGES_PER_CLASS]
        if small:
            raise StudioError(f"each class needs at least {MIN_IMAGES_PER_CLASS} images (one to train on, one to "
                              f"check the model with), 10 or more work better; add images to {', '.join(small)}")  # fmt: skip

    def dataset(self) -> ImageDataset:
        """The images folder as the library reads it (`cifar-cnn train --data <project>/images`)."""
        return image_folder(self.images_dir, image_size=IMAGE_SIZE, workers=1, progress=False)

    def has_model(self) -> bool:
        return (self.model_dir / MODEL_FILE).is_file()

    def evaluation(self) -> dict | None:
        try:
            return json.loads((self.model_dir / EVALUATION_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def cell(self, actual: str, predicted: str) -> list[dict]:
        """The validation images of class `actual` the model called `predicted`, with thumbnails."""
        evaluation = self.evaluation()
        if evaluation is None:
            raise StudioError(f"project {self.name!r} has no trained model yet", "conflict")
        classes = evaluation["classes"]
        for c in (actual, predicted):
            if c not in classes:
                raise StudioError(f"{c!r} is not a class of the trained model ({', '.join(classes)})", "not_found")
        a, p = classes.index(actual), classes.index(predicted)
        out = []
        for item in evaluation["images"]:
            if item["actual"] == a and item["predicted"] == p:
                cls, _, image_id = item["file"].partition("/")
                path = self.images_dir / item["file"]
                out.append({"class": cls, "id": image_id, "label": classes[p], "score": item["score"],
                            "uncertain": item["uncertain"], "reason": item["reason"],
                            "thumbnail": thumbnail(path) if path.is_file() else None})  # fmt: skip
        return out

    def export(self, fmt: str) -> Path:
        """The file of a download: "safetensors" (the model), "onnx" (made on first request) or "labels"."""
        if fmt not in EXPORTS:
            raise StudioError(f"unknown export {fmt!r}: choose {', '.join(EXPORTS)}", "not_found")
        with self.studio._model_lock(self.name):
            if not self.has_model():
                raise StudioError(f"project {self.name!r} has no trained model yet: press Train first", "conflict")
            path = self.model_dir / EXPORTS[fmt]
            if fmt == "onnx" and not path.is_file():
                self._export_onnx(path)
            return path

    def _export_onnx(self, path: Path) -> None:
        from cifar_cnn.export import export_onnx
        from cifar_cnn.predict import load

        self.studio._check_disk(0)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            export_onnx(load(self.model_dir / MODEL_FILE), tmp)
            tmp.replace(path)
        except ImportError as exc:
            raise StudioError("ONNX export needs the export extras: pip install 'cifar-cnn[export]'",
                              "unavailable") from exc  # fmt: skip
        finally:
            tmp.unlink(missing_ok=True)
        self.studio._usage = None

    def info(self) -> dict:
        """Everything the page shows of a project, as JSON-ready values."""
        counts = self.count()
        meta = self.meta()
        job = self.studio.queue.job(self.name)
        evaluation = self.evaluation() if self.has_model() else None
        model = None
        if evaluation is not None:
            model = {"classes": evaluation["classes"], "accuracy": evaluation["accuracy"],
                     "trained_at": evaluation.get("trained_at"), "train_seconds": evaluation.get("train_seconds"),
                     "total_seconds": evaluation.get("total_seconds"),
                     "stale": evaluation.get("files_sha") != self.files_sha()}  # fmt: skip
        limits = self.studio.limits
        return {"name": self.name, "created": meta.get("created"),
                "classes": [{"name": c, "images": n} for c, n in counts.items()], "images": sum(counts.values()),
                "model": model, "job": job.to_dict() if job else None, "last_job": meta.get("last_job"),
                "folder": f"{self.name}/{IMAGES_DIR}",
                "limits": {"images_per_project": limits.images_per_project,
                           "bytes_per_image": limits.bytes_per_image, "total_bytes": limits.total_bytes,
                           "used_bytes": self.studio.usage()}}  # fmt: skip


def evaluate(clf, ds: ImageDataset) -> dict:
    """Per-class accuracy, the confusion matrix and each image's prediction (with its uncertain flag)
    on the data set's test split (a studio project's validation split), as JSON-ready values."""
    import torch

    from cifar_cnn.evaluate import compute_metrics

    files = ds.files.get(ds.test_split, [])
    logits, novelty = clf.logits_and_novelty(ds.test_x)
    probs = torch.softmax(logits / clf.temperature, dim=1).numpy()
    predictions = clf.to_predictions(probs, 3, novelty)
    metrics = compute_metrics(logits, ds.test_y, clf.classes)
    uncertain = np.zeros(len(clf.classes), dtype=int)
    images = []
    for f, y, p in zip(files, ds.test_y, predictions, strict=True):
        uncertain[int(y)] += p.uncertain
        images.append({"file": f.replace(os.sep, "/"), "actual": int(y), "predicted": clf.classes.index(p.label),
                       "score": round(p.score, 4), "uncertain": p.uncertain, "reason": p.reason})  # fmt: skip
    totals = metrics.confusion.sum(1)
    per_class = [{"class": c, "accuracy": None if not totals[i] else float(metrics.per_class_accuracy[i]),
                  "images": int(totals[i]), "uncertain": int(uncertain[i])} for i, c in enumerate(clf.classes)]  # fmt: skip
    return {"classes": list(clf.classes), "split": "validation" if ds.test_split == "val" else ds.test_split,
            "accuracy": float(metrics.accuracy), "images_evaluated": len(files), "per_class": per_class,
            "confusion": metrics.confusion.tolist(), "uncertain": int(uncertain.sum()), "images": images}  # fmt: skip


__all__ = ["Job", "Limits", "Project", "Studio", "StudioError", "TrainingQueue", "check_name", "default_workdir",
           "evaluate", "reencode"]  # fmt: skip

"""Predict any number of image files into a CSV or JSONL file, in constant memory.

    clf = cifar_cnn.load()
    summary = predict_folder(clf, ["photos/"], "predictions.csv", recursive=True)
    summary.errors        # files that could not be read: each has a row with its error

The pipeline: folders are walked lazily (sorted per folder, so runs repeat); worker processes
decode files (the same `images.load_image` as `Classifier.predict`, at the size in the model's
card) a chunk at a time, with a bounded number of chunks in flight; the main process batches the
decoded images for `Classifier.predict_proba` and writes one row per file, in walk order, flushing
after every batch. Nothing holds a list of all paths or results: memory is constant, bar the
16-byte key per row already written that `resume=True` keeps to skip those files.

A killed run leaves a valid file (at most a partly written last row, which `resume` cuts off) that
`resume=True` continues; a file a decoder crashes on becomes an error row.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import chain, islice
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cifar_cnn.datasets import IGNORED  # system clutter (thumbs.db, __MACOSX...), as when training
from cifar_cnn.errors import CifarCnnError, ImageError
from cifar_cnn.images import load_image

if TYPE_CHECKING:
    from cifar_cnn.predict import Classifier, Prediction

# Files taken from a folder: what Pillow reads, plus HEIC/AVIF so that they get an error row that
# says how to convert them rather than being passed over. Files named explicitly are always tried.
IMAGE_EXTENSIONS = frozenset({
    ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".apng", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff", ".ppm",
    ".pgm", ".pbm", ".pnm", ".tga", ".ico", ".jp2", ".j2k", ".jpx", ".pcx", ".qoi", ".sgi", ".dds", ".avif",
    ".heic", ".heif",
})  # fmt: skip
FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
CSV_COLUMNS = ["path", "label", "score", "uncertain", "reason", "top_k", "error"]
BATCH_SIZE = 256  # images per model call
CHUNK = 32  # files per task sent to a decoding worker
PARALLEL_FROM = 64  # fewer files than this are decoded in this process: a pool would cost more
WORKER_NICE = 10  # decoders only need to keep up with the model: let the model's threads go first
ENCODING = {"encoding": "utf-8", "errors": "surrogateescape"}  # any file name round-trips (Linux bytes)


class RowSink(Protocol):
    """Where rows go: a predictions file, or the CLI's printer."""

    def write(self, path: str, result: Prediction | ImageError) -> None: ...

    def flush(self) -> None: ...


@dataclass
class BulkSummary:
    """What a bulk run did; `format()` is the CLI's summary line."""

    predicted: int = 0
    errors: int = 0
    resumed: int = 0  # files skipped because the output already had their row
    errors_before: int = 0  # error rows the output already had (resume)
    not_images: int = 0  # entries of walked folders without an image extension, or not files (pipes...)
    subfolders: int = 0  # subfolders not entered (recursive=False)
    seconds: float = 0.0
    out: str | None = None

    @property
    def images_per_second(self) -> float:
        return (self.predicted + self.errors) / self.seconds if self.seconds > 0 else 0.0

    def format(self) -> str:
        parts = [f"{self.predicted:,} predicted", f"{self.errors:,} error{'s' * (self.errors != 1)}"]
        if self.resumed or self.errors_before:
            before = f" ({self.errors_before:,} of its rows are errors)" if self.errors_before else ""
            parts.append(f"{self.resumed:,} already in the output{before}")
        line = ", ".join(parts) + f" in {self.seconds:.1f} s ({self.images_per_second:,.0f} images/s)"
        if self.out:
            line += f" -> {self.out}"
        if self.subfolders:
            line += f"; {self.subfolders} subfolder(s) not entered (add --recursive)"
        return line


def predict_folder(clf: Classifier, inputs: Iterable[str | os.PathLike], out: str | os.PathLike | RowSink, *,
                   recursive: bool = False, top_k: int = 5, resume: bool = False, overwrite: bool = False,
                   workers: int | None = None, batch_size: int = BATCH_SIZE,
                   progress: bool = False) -> BulkSummary:  # fmt: skip
    """Predict every image file of `inputs` (files, and folders: their image files, subfolders too
    with `recursive`) and write one row per file to `out`: a .csv or .jsonl path, or a `RowSink`.

    With `resume`, files that already have a row in `out` are skipped (a partly written last row,
    left by a killed run, is cut off first); without it an existing `out` is refused unless
    `overwrite`. Rows are flushed after every batch, so a killed run loses at most one batch.

    Returns a `BulkSummary` (counts, seconds, images/s).
    Raises:
        CifarCnnError: an input that does not exist, `out` exists (and neither resume nor overwrite),
            `out` unwritable or of an unknown format, or not a predictions file when resuming.
    """
    if batch_size < 1:
        raise CifarCnnError("--batch-size must be at least 1")
    if workers is not None and workers < 0:
        raise CifarCnnError("--workers must be 0 or more")
    inputs = [os.fspath(p) for p in inputs]
    missing = [p for p in inputs if not os.path.lexists(p)]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CifarCnnError(f"{missing[0]}: no such file or folder{more}")
    summary = BulkSummary()
    start = time.perf_counter()
    with contextlib.ExitStack() as stack:
        if isinstance(out, (str, os.PathLike)):
            output = stack.enter_context(PredictionFile(out, resume=resume, overwrite=overwrite))
            summary.out, sink, done = str(out), output, output.done
        else:
            sink, done = out, None
        bar = stack.enter_context(_progress_bar(progress))
        paths = walk(inputs, recursive, summary, skip=done)
        batches = predict_batches(clf, paths, top_k=top_k, workers=workers, batch_size=batch_size)
        for batch in stack.enter_context(contextlib.closing(batches)):  # closing: stops the pool on errors
            _write_batch(sink, batch, summary)
            bar.update(len(batch))
    summary.seconds = time.perf_counter() - start
    summary.resumed = done.matched if done is not None else 0
    summary.errors_before = done.errors if done is not None else 0
    if summary.predicted + summary.errors == 0 and not (done is not None and len(done)):
        if isinstance(out, (str, os.PathLike)):
            Path(out).unlink(missing_ok=True)  # only a CSV header: leave nothing behind
        raise CifarCnnError(_nothing_found(inputs, summary))
    if done is not None and len(done) and not done.matched:
        print(f"warning: none of the {len(done):,} rows already in {out} matched these inputs: resume with the "
              "inputs written the same way (the same relative or absolute paths)", file=sys.stderr)  # fmt: skip
    return summary


def _nothing_found(inputs: list[str], summary: BulkSummary) -> str:
    where = ", ".join(inputs[:3]) + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")
    hints = []
    if summary.not_images:
        hints.append(f"{summary.not_images} file(s) without an image name such as .jpg or .png")
    if summary.subfolders:
        hints.append(f"{summary.subfolders} subfolder(s): add --recursive to include them")
    return f"no image files in {where}" + (f" ({'; '.join(hints)})" if hints else "")


def _write_batch(sink: RowSink, batch: list, summary: BulkSummary) -> None:
    try:
        for path, result in batch:
            sink.write(path, result)
            if isinstance(result, ImageError):
                summary.errors += 1
            else:
                summary.predicted += 1
        sink.flush()
    except OSError as exc:  # a full disk, a removed drive
        if summary.out is None:
            raise
        raise CifarCnnError(f"cannot write {summary.out}: {exc.strerror or exc}; the rows written so far are "
                            "kept: fix this, then run again with --resume") from exc  # fmt: skip


def iter_predictions(clf: Classifier, inputs: Iterable[str | os.PathLike], *, recursive: bool = False,
                     top_k: int = 5, workers: int | None = None,
                     batch_size: int = BATCH_SIZE) -> Iterator[tuple[str, Prediction | ImageError]]:  # fmt: skip
    """(path, Prediction or ImageError) for every image file of `inputs`, in walk order, lazily."""
    paths = walk([os.fspath(p) for p in inputs], recursive)
    for batch in predict_batches(clf, paths, top_k=top_k, workers=workers, batch_size=batch_size):
        yield from batch


def predict_batches(clf: Classifier, paths: Iterable[str], *, top_k: int = 5, workers: int | None = None,
                    batch_size: int = BATCH_SIZE) -> Iterator[list[tuple[str, Prediction | ImageError]]]:  # fmt: skip
    """Decode `paths` in worker processes and predict them `batch_size` images at a time: yields
    each batch's rows (path, Prediction or ImageError) in the order of `paths`."""
    rows: list[tuple[str, ImageError | None]] = []  # this batch, in order; None: decoded into `arrays`
    arrays: list[np.ndarray] = []
    n_ok = 0
    for chunk, (images, errors) in decode_chunks(paths, clf.input_size, workers):
        failed = dict(errors)
        rows += [(p, _image_error(p, *failed[i]) if i in failed else None) for i, p in enumerate(chunk)]
        arrays.append(images)
        n_ok += len(images)
        if n_ok >= batch_size or len(rows) >= 4 * batch_size:  # (a folder of broken files still moves on)
            yield _predict_rows(clf, rows, arrays, top_k)
            rows, arrays, n_ok = [], [], 0
    if rows:
        yield _predict_rows(clf, rows, arrays, top_k)


def _predict_rows(clf: Classifier, rows: list, arrays: list[np.ndarray], top_k: int) -> list:
    images = np.concatenate(arrays) if arrays else np.empty((0, clf.input_size, clf.input_size, 3), np.uint8)
    predictions = iter(clf.predict_arrays(images, top_k))
    out = []
    for path, error in rows:
        result = error or next(predictions)
        if error is None:
            result.filename = path
        out.append((path, result))
    return out


def _image_error(path: str, kind: str, message: str) -> ImageError:
    return ImageError(f"{path}: {message}", kind)


def error_reason(error: ImageError, path: str) -> str:
    """An ImageError's message without the file name it starts with."""
    text = str(error)
    return text[len(path) + 2 :] if text.startswith(f"{path}: ") else text


# Walking ------------------------------------------------------------------------------------------


def _is_ignored(name: str) -> bool:
    return name.startswith((".", "~$")) or name.lower() in IGNORED


def walk(inputs: list[str], recursive: bool, summary: BulkSummary | None = None,
         skip: DoneSet | None = None) -> Iterator[str]:  # fmt: skip
    """Files to predict, lazily: each input file as given, and the image files of each input folder
    (sorted by name, hidden files skipped; subfolders too when `recursive`, symlinked ones not
    followed, so a link cycle cannot loop). A folder that cannot be listed is yielded itself, so
    that it gets an error row. Paths in `skip` are left out."""
    summary = summary or BulkSummary()
    for top in inputs:
        if not os.path.isdir(top):
            if skip is None or not skip.take(top):
                yield top
            continue
        stack = [iter([top])]  # one sorted listing per folder being walked: memory ~ one folder
        while stack:
            folder = next(stack[-1], None)
            if folder is None:
                stack.pop()
                continue
            try:
                with os.scandir(folder) as it:
                    entries = sorted((e for e in it if not _is_ignored(e.name)), key=lambda e: e.name)
            except OSError:
                if skip is None or not skip.take(folder):
                    yield folder  # decode_chunk says why: "cannot list this folder (Permission denied)"
                continue
            subfolders = []
            for entry in entries:
                if _entry_is_dir(entry):
                    subfolders.append(entry.path)
                elif os.path.splitext(entry.name)[1].lower() not in IMAGE_EXTENSIONS or not _is_file(entry):
                    summary.not_images += 1
                elif skip is None or not skip.take(entry.path):
                    yield entry.path
            if recursive:
                stack.append(iter(subfolders))
            else:
                summary.subfolders += len(subfolders)


def _is_file(entry: os.DirEntry) -> bool:
    """A file, or a link to one: not a pipe (reading it would wait forever). A broken link counts,
    so that it gets an error row."""
    try:
        return entry.is_file() or (entry.is_symlink() and not os.path.exists(entry.path))
    except OSError:
        return True  # open_image will say why it cannot be read


def _entry_is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


# Decoding in worker processes ---------------------------------------------------------------------


ChunkResult = tuple[np.ndarray, list[tuple[int, tuple[str, str]]]]  # (decoded images, [(index, (kind, message))])


def decode_chunk(paths: list[str], size: int) -> ChunkResult:
    """Decode files to uint8 (n_ok, size, size, 3) as `Classifier.load_image` does, and say why the
    others failed. Runs in the worker processes: it needs no model."""
    images, errors = [], []
    for i, path in enumerate(paths):
        try:
            images.append(load_image(path, size))
        except ImageError as exc:
            errors.append((i, (exc.kind, _folder_reason(path) or error_reason(exc, path))))
        except (MemoryError, RecursionError) as exc:  # what images.py lets through: a hostile file
            errors.append((i, ("too_large", f"could not be decoded ({type(exc).__name__})")))
    stacked = np.stack(images) if images else np.empty((0, size, size, 3), np.uint8)
    return stacked, errors


def _folder_reason(path: str) -> str | None:
    """Why a folder (that the walk could not list) cannot be read; None for anything else."""
    if not os.path.isdir(path):
        return None
    try:
        os.listdir(path)
    except OSError as exc:
        return f"cannot list this folder ({exc.strerror or exc})"
    return None


def decode_chunks(paths: Iterable[str], size: int, workers: int | None = None,
                  chunk: int = CHUNK) -> Iterator[tuple[list[str], ChunkResult]]:  # fmt: skip
    """(chunk of paths, its decode_chunk result) in order: in `workers` processes (default: one per
    core; 0 or 1: in this process), with a bounded number of chunks in flight."""
    paths = iter(paths)
    head = list(islice(paths, PARALLEL_FROM))
    workers = (os.cpu_count() or 1) if workers is None else workers
    chunks = _chunked(chain(head, paths), chunk)
    if workers <= 1 or len(head) < PARALLEL_FROM:
        for c in chunks:
            yield c, decode_chunk(c, size)
        return
    with _DecodePool(size, workers, in_flight=max(2 * workers, BATCH_SIZE // chunk + workers)) as pool:
        yield from pool.map(chunks)


def _chunked(items: Iterator[str], n: int) -> Iterator[list[str]]:
    while chunk := list(islice(items, n)):
        yield chunk


def _worker_init() -> None:
    # Ctrl-C is the parent's to handle: it stops the pool. Lower priority: see WORKER_NICE.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        os.nice(WORKER_NICE)
    if sys.platform == "linux":  # die with the parent, even a parent killed by SIGKILL
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG
            if os.getppid() == 1:
                os._exit(0)


CRASHED = ("damaged", "the image decoder crashed on this file")


class _DecodePool:
    """A process pool fed a bounded number of chunks at a time. When a worker dies (a decoder
    crashing on a hostile file), the pool is restarted and the chunk is decoded again one file at a
    time, so that only the culprit becomes an error row."""

    def __init__(self, size: int, workers: int, in_flight: int):
        self.size, self.workers, self.in_flight = size, workers, in_flight
        self.pool = None

    def __enter__(self) -> _DecodePool:
        self._start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:  # Ctrl-C, an error, or the consumer stopped: do not wait for a stuck read
            for process in list((getattr(self.pool, "_processes", None) or {}).values()):
                process.kill()
        self.pool.shutdown(wait=True, cancel_futures=True)

    def _start(self) -> None:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        # fork starts workers in milliseconds and they only run Pillow and numpy, so the parent's
        # (torch's) threads do not matter; elsewhere spawn, which re-imports the package.
        context = mp.get_context("fork" if sys.platform == "linux" else "spawn")
        self.pool = ProcessPoolExecutor(self.workers, mp_context=context, initializer=_worker_init)

    def _restart(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self._start()

    def map(self, chunks: Iterator[list[str]]) -> Iterator[tuple[list[str], ChunkResult]]:
        pending: deque = deque()
        for c in chunks:
            pending.append((c, self.pool.submit(decode_chunk, c, self.size)))
            if len(pending) >= self.in_flight:
                yield self._collect(pending)
        while pending:
            yield self._collect(pending)

    def _collect(self, pending: deque) -> tuple[list[str], ChunkResult]:
        from concurrent.futures.process import BrokenProcessPool

        c, future = pending.popleft()
        try:
            return c, future.result()
        except BrokenProcessPool:
            rest = [p for p, _ in pending]
            pending.clear()
            self._restart()
            result = self._one_by_one(c)
            pending.extend((p, self.pool.submit(decode_chunk, p, self.size)) for p in rest)
            return c, result

    def _one_by_one(self, chunk: list[str]) -> ChunkResult:
        from concurrent.futures.process import BrokenProcessPool

        images, errors = [], []
        for i, path in enumerate(chunk):
            try:
                one, failed = self.pool.submit(decode_chunk, [path], self.size).result()
            except BrokenProcessPool:
                self._restart()
                one, failed = np.empty((0, self.size, self.size, 3), np.uint8), [(0, CRASHED)]
            images.append(one)
            errors += [(i, why) for _, why in failed]
        return np.concatenate(images), errors


# Output files -------------------------------------------------------------------------------------


def output_format(path: str | os.PathLike) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise CifarCnnError(f"{path}: the output must be a .csv or .jsonl file (one JSON object per line)")
    return fmt


def _key(path: str) -> bytes:
    return hashlib.blake2b(os.path.normpath(path).encode("utf-8", "surrogateescape"), digest_size=16).digest()


class DoneSet:
    """The paths already in an output file, as a sorted array of 16-byte hashes (16 bytes a row)."""

    def __init__(self, keys: bytes = b"", errors: int = 0):
        self.keys = np.sort(np.frombuffer(keys, dtype="S16"))
        self.errors = errors  # how many of the rows are errors
        self.matched = 0

    def __len__(self) -> int:
        return len(self.keys)

    def take(self, path: str) -> bool:
        """Whether `path` is done (and count it)."""
        if not len(self.keys):
            return False
        key = _key(path).rstrip(b"\0")  # numpy's S16 items drop trailing zero bytes: compare alike
        i = int(np.searchsorted(self.keys, key))
        found = i < len(self.keys) and self.keys[i] == key
        self.matched += found
        return found


class PredictionFile:
    """A .csv or .jsonl predictions file, opened for appending rows. `resume` reads the rows already
    there (cutting off a partly written last one); otherwise an existing file is refused unless
    `overwrite`. Parent folders are created."""

    @staticmethod
    def check(path: str | os.PathLike, resume: bool = False, overwrite: bool = False) -> None:
        """Raise CifarCnnError for an output that cannot be written as asked, before any work."""
        if Path(path).is_dir():
            raise CifarCnnError(f"{path} is a folder: give --out a file name ending in .csv or .jsonl")
        output_format(path)
        path = Path(path)
        if resume and overwrite:
            raise CifarCnnError("choose one of --resume (continue the output) and --overwrite (start it over)")
        if path.exists() and not (resume or overwrite):
            raise CifarCnnError(f"{path} already exists: add --resume to skip the files it already has, "
                                "or --overwrite to start it over")  # fmt: skip
        folder = path.absolute().parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent
        if not folder.is_dir():
            raise CifarCnnError(f"cannot write {path}: {folder} is a file, not a folder")
        if not os.access(path if path.exists() else folder, os.W_OK):
            raise CifarCnnError(f"cannot write {path}: permission denied")

    def __init__(self, path: str | os.PathLike, resume: bool = False, overwrite: bool = False):
        self.check(path, resume, overwrite)
        self.path, self.format = Path(path), output_format(path)
        exists = self.path.exists()
        self.done = DoneSet()
        keep = 0
        try:
            if exists and resume:
                keys, keep, errors = _read_rows(self.path, self.format)
                self.done = DoneSet(keys, errors)
                with open(self.path, "r+b") as f:
                    f.truncate(keep)  # a partly written last row goes; its file is predicted again
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            self.file = open(self.path, "a" if keep else "w", newline="", **ENCODING)  # noqa: SIM115
        except OSError as exc:
            raise CifarCnnError(f"cannot write {self.path}: {exc.strerror or exc}") from exc
        self.rows = _CsvRows(self.file) if self.format == "csv" else _JsonRows(self.file)
        if keep == 0:
            self.rows.header()

    def write(self, path: str, result: Prediction | ImageError) -> None:
        self.rows.write(path, result)

    def flush(self) -> None:
        self.file.flush()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # a full disk was already reported by the write that failed
            self.file.close()

    def __enter__(self) -> PredictionFile:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _CsvRows:
    def __init__(self, file):
        self.writer = csv.writer(file, lineterminator="\n")

    def header(self) -> None:
        self.writer.writerow(CSV_COLUMNS)

    def write(self, path: str, result: Prediction | ImageError) -> None:
        if isinstance(result, ImageError):
            self.writer.writerow([path, "", "", "", "", "", error_reason(result, path)])
            return
        top = json.dumps({label: round(score, 6) for label, score in result.top_k}, ensure_ascii=False)
        reason = getattr(result, "reason", None) or ""  # why it is uncertain, in words
        self.writer.writerow(
            [path, result.label, f"{result.score:.6f}", str(result.uncertain).lower(), reason, top, ""]
        )


class _JsonRows:
    def __init__(self, file):
        self.file = file

    def header(self) -> None:
        pass

    def write(self, path: str, result: Prediction | ImageError) -> None:
        if isinstance(result, ImageError):
            row = {"path": path, "error": error_reason(result, path)}
        else:
            row = {"path": path, **result.to_dict()}
        self.file.write(json.dumps(row, ensure_ascii=False) + "\n")


def _read_rows(path: Path, fmt: str) -> tuple[bytes, int, int]:
    """(the keys of the paths of the complete rows of a predictions file, bytes they take up, how
    many of them are errors)."""
    try:
        with open(path, "rb") as f:
            return _read_csv(f, path) if fmt == "csv" else _read_jsonl(f, path)
    except OSError as exc:
        raise CifarCnnError(f"cannot read {path} to resume it: {exc.strerror or exc}") from exc


def _not_ours(path: Path, line: int, what: str) -> CifarCnnError:
    return CifarCnnError(f"{path} line {line} {what}: it is not a predictions file written by cifar-cnn predict, "
                         "so --resume cannot continue it; give another --out")  # fmt: skip


def _read_jsonl(f, path: Path) -> tuple[bytes, int, int]:
    keys, end, errors = bytearray(), 0, 0
    for n, line in enumerate(f, 1):
        if not line.endswith(b"\n"):
            break  # a killed run's partly written last row
        try:
            row = json.loads(line.decode(**ENCODING))
            keys += _key(row["path"])
            errors += "error" in row
        except (ValueError, KeyError, TypeError) as exc:
            raise _not_ours(path, n, "is not a row with a path") from exc
        end += len(line)
    return bytes(keys), end, errors


def _read_csv(f, path: Path) -> tuple[bytes, int, int]:
    consumed, complete = 0, True

    def lines():  # a CSV record may span lines (a quoted newline in a file name)
        nonlocal consumed, complete
        for line in f:
            consumed += len(line)
            complete = line.endswith(b"\n")  # a row cut off by a kill does not end with one
            yield line.decode(**ENCODING)

    reader = csv.reader(lines(), strict=True)
    keys, end, errors = bytearray(), 0, 0
    try:
        for record in reader:
            if not complete:
                break
            if not record:  # a blank line
                pass
            elif end == 0:
                if record != CSV_COLUMNS:
                    raise _not_ours(path, 1, f"has the columns {','.join(record)[:80]!r}")
            elif len(record) != len(CSV_COLUMNS):
                raise _not_ours(path, reader.line_num, f"has {len(record)} fields")
            else:
                keys += _key(record[0])
                errors += bool(record[-1])
            end = consumed
    except csv.Error as exc:
        if f.read(1):  # not at the end: the file is damaged or not ours
            raise _not_ours(path, reader.line_num, f"is not valid CSV ({exc})") from exc
        # else a quoted field cut off by the end of the file: a partly written last row
    return bytes(keys), end, errors


@contextlib.contextmanager
def _progress_bar(enabled: bool):
    from tqdm.auto import tqdm

    bar = tqdm(desc="predicting", unit="img", disable=not enabled, dynamic_ncols=True, mininterval=0.5)
    try:
        yield bar
    finally:
        bar.close()

"""Data sets for training: CIFAR-10 or any labelled folder, as uint8 arrays with their classes,
splits and channel statistics.

    ds = image_folder("photos/")        # photos/<class name>/**/<images>, any formats and sizes
    print(ds.check.format())             # what was found, skipped, duplicated, leaked
    ds = cifar10()                       # CIFAR-10 (keras contract underneath)

A folder holds one subfolder per class (names sorted, any Unicode; images in nested folders
belong to their top-level class), or `train/` plus `val/` (`valid/`) and/or `test/`, each holding
the class subfolders. Without a `val/`, a stratified, seeded split of the training images is the
validation set (exact duplicate files stay on one side of it). Images are decoded once, in
parallel, through the same decoder as `predict` (`images.load_image`), and cached per file by
path, size and modification time, so a second run on the same folder starts in seconds.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import unicodedata
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cifar_cnn.errors import CifarCnnError, DataError, ImageError
from cifar_cnn.preprocess import CIFAR10_MEAN, CIFAR10_STD

SPLIT_FOLDERS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
IGNORED = {"thumbs.db", "desktop.ini", "__macosx", "$recycle.bin", "system volume information", "@eadir"}
MIN_IMAGES_PER_CLASS = 2  # one to train on, one to validate
MAX_CLASSES = 1000
IMBALANCE_RATIO = 3.0  # largest / smallest class above this: suggest class weights
PARALLEL_FROM = 256  # fewer files than this decode in this process (a pool costs more than it saves)
CACHE_VERSION = 1
SKIP_REASONS = {"unsupported": "not an image", "empty": "empty file", "too_large": "too large",
                "damaged": "damaged or truncated", "missing": "unreadable"}  # fmt: skip


@dataclass
class DataCheck:
    """What a folder holds and what is wrong with it. `errors` stop training; `warnings` don't."""

    root: str
    layout: str  # "classes" (one folder per class) or "splits" (train/ val/ test/)
    classes: list[str] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> images
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why)
    ignored: int = 0  # hidden and system files, silently left out
    empty_classes: list[str] = field(default_factory=list)
    duplicates_in_class: list[list[str]] = field(default_factory=list)  # identical files, one class
    duplicates_across_classes: list[list[str]] = field(default_factory=list)  # likely labelling errors
    leaks: list[list[str]] = field(default_factory=list)  # identical files in train and val/test
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict:
        d = dict(self.__dict__)
        d["skipped"] = [{"file": f, "reason": r} for f, r in self.skipped]
        return d

    def format(self, limit: int = 10) -> str:
        lines = [
            f"Data check of {self.root} ({'train/val/test folders' if self.layout == 'splits' else 'class folders'})"
        ]
        splits = list(self.counts)
        if self.classes:
            width = max(12, *(len(c) for c in self.classes)) + 2
            lines.append(f"  {'class':<{width}}" + "".join(f"{s:>8}" for s in splits))
            for c in self.classes:
                lines.append(f"  {c:<{width}}" + "".join(f"{self.counts[s].get(c, 0):>8}" for s in splits))
            lines.append(f"  {'total':<{width}}" + "".join(f"{sum(self.counts[s].values()):>8}" for s in splits))
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)} file(s):")
            reasons = Counter(r.split(":")[0] for _, r in self.skipped)
            lines.append("  " + ", ".join(f"{n} {r}" for r, n in reasons.most_common()))
            lines += [f"  {f}: {r}" for f, r in self.skipped[:limit]]
            if len(self.skipped) > limit:
                lines.append(f"  ... and {len(self.skipped) - limit} more")
        for title, groups in (("Identical files within a class (counted once each)", self.duplicates_in_class),
                              ("Identical files in different classes (a labelling error?)", self.duplicates_across_classes),
                              ("Identical files in training and validation/test (a leak)", self.leaks)):  # fmt: skip
            if groups:
                lines.append(f"{title}: {len(groups)} group(s)")
                lines += ["  " + " = ".join(g) for g in groups[:limit]]
        lines += [f"warning: {w}" for w in self.warnings]
        lines += [f"error: {e}" for e in self.errors]
        if self.ok:
            lines.append("OK: ready to train" + (" (see the warnings above)" if self.warnings else ""))
        return "\n".join(lines)


@dataclass
class ImageDataset:
    """uint8 images (N, S, S, 3) with int64 labels (N,) for each split, and what describes them.

    `val` fits calibration (temperature, uncertain threshold) and is never trained on; `test` is
    what `evaluate` reports (the validation split when a folder has no test split)."""

    name: str
    classes: list[str]
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    sha256: str = ""  # of the decoded arrays: identifies the data a model saw
    recipe_tuned: bool = False  # True for CIFAR-10: the recipes' schedules were tuned on it as they are
    test_split: str = "test"  # "test", or "val" when the folder has no test images
    files: dict[str, list[str]] = field(default_factory=dict)  # split -> file paths, in array order
    check: DataCheck | None = None
    split: dict = field(default_factory=dict)  # how val was drawn: {"val_fraction", "seed"}, to redo it

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def summary(self) -> dict:
        return {"name": self.name, "train_images": len(self.train_x), "val_images": len(self.val_x),
                "test_images": len(self.test_x), "test_split": self.test_split, "sha256": self.sha256,
                "folder": not self.recipe_tuned, **self.split}  # fmt: skip


# ---- CIFAR-10 ----------------------------------------------------------------------------------


def cifar10(path=None, *, holdout: int = 1000, train_subset: int | None = None, test_subset: int | None = None,
            verbose: bool = True) -> ImageDataset:  # fmt: skip
    """CIFAR-10 from `data.load_cifar10` (see there for where it looks)."""
    from cifar_cnn.data import load_cifar10

    return from_arrays(load_cifar10(path, verbose=verbose), holdout=holdout, train_subset=train_subset,
                       test_subset=test_subset)  # fmt: skip


def from_arrays(data, *, holdout: int = 1000, train_subset: int | None = None, test_subset: int | None = None,
                classes=None, name: str = "CIFAR-10") -> ImageDataset:  # fmt: skip
    """The keras contract `((x_train, y_train), (x_test, y_test))` as a data set. The last
    `holdout` training images (at most a tenth) are the validation split: the official CIFAR-10
    batches come shuffled, so that is a random, near-stratified sample."""
    from cifar_cnn.data import CLASS_NAMES, arrays_sha256

    (x_train, y_train), (x_test, y_test) = data
    sha = arrays_sha256(data)
    x_train, y_train = x_train[:train_subset], np.asarray(y_train[:train_subset]).ravel().astype(np.int64)
    x_test, y_test = x_test[:test_subset], np.asarray(y_test[:test_subset]).ravel().astype(np.int64)
    n = len(x_train) - min(holdout, len(x_train) // 10)
    if classes is None:
        classes = list(CLASS_NAMES) if int(max(y_train.max(initial=0), y_test.max(initial=0))) < 10 else None
    if classes is None:
        raise DataError("arrays with labels of 10 or more: pass their class names with classes=[...]")
    return ImageDataset(
        name=name, classes=list(classes), train_x=x_train[:n], train_y=y_train[:n], val_x=x_train[n:],
        val_y=y_train[n:], test_x=x_test, test_y=y_test, mean=CIFAR10_MEAN, std=CIFAR10_STD,
        input_size=int(x_train.shape[1]), sha256=sha, recipe_tuned=True,
    )  # fmt: skip


# ---- labelled folders --------------------------------------------------------------------------


def image_folder(folder: str | os.PathLike, *, image_size: int = 32, val_fraction: float = 0.2, seed: int = 0,
                 workers: int | None = None, progress: bool = True, cache: bool = True) -> ImageDataset:  # fmt: skip
    """Read a labelled image folder into a data set, checking it on the way (`ds.check`).

    Args:
        image_size: the square side images are resized to, as `predict` resizes them.
        val_fraction: share of each class held out for validation when there is no `val/` folder.
        seed: picks the validation images (same seed, same split).
        workers: decoding processes (default: all cores).
        cache: reuse decoded images of files whose path, size and modification time are unchanged.

    Raises:
        DataError: no such folder, fewer than 2 classes, a class too small to split, or no images.
    """
    if not 16 <= image_size <= 512:
        raise DataError(f"image size {image_size} px is out of range: use 16 to 512 (32 or 64 are typical)")
    if not 0 <= val_fraction < 1:
        raise DataError(f"validation fraction {val_fraction} must be at least 0 and below 1")
    check, entries = scan_folder(folder)
    paths = [e[0] for e in entries]
    images, digests, failures = decode_files(Path(folder), paths, image_size, workers, progress, cache)
    check.skipped += [(p, SKIP_REASONS.get(kind, "unreadable") + f": {msg}") for p, (kind, msg) in failures.items()]
    good = [i for i, p in enumerate(paths) if p not in failures]
    entries = [entries[i] for i in good]
    images, digests = images[good], [digests[i] for i in good]
    return _assemble(Path(folder), check, entries, images, digests, image_size, val_fraction, seed)


def check_folder(folder: str | os.PathLike, **kwargs) -> DataCheck:
    """Run every check of `image_folder` and return the findings (errors included) without raising
    for a folder that cannot be trained on as it is."""
    try:
        return image_folder(folder, **kwargs).check  # type: ignore[return-value]
    except DataError as exc:
        check = getattr(exc, "check", None)
        if check is None:
            raise
        return check


def labelled_images(folder: str | os.PathLike, classes: list[str], image_size: int = 32,
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray, list[str]]:  # fmt: skip
    """Every image of a folder of class subfolders (or train/val/test folders of them) whose names
    are among a model's `classes`: uint8 (N, S, S, 3), int64 labels (N,), and one message per
    skipped file. For evaluating a model on new labelled images.

    Raises:
        DataError: no such folder, a subfolder that is not one of `classes`, or no readable image.
    """
    check, entries = scan_folder(folder)
    unknown = sorted({c for _, _, c in entries} - set(classes))
    if unknown:
        raise DataError(f"{folder}: subfolders {', '.join(unknown)} are not classes of the model; "
                        f"its classes: {', '.join(classes)}")  # fmt: skip
    paths = [e[0] for e in entries]
    images, _, failures = decode_files(Path(folder), paths, image_size, progress=progress)
    problems = [f"{f}: {why}" for f, why in check.skipped] + [f"{c}: empty folder" for c in check.empty_classes]
    problems += [f"{p}: {SKIP_REASONS.get(kind, 'unreadable')}: {msg}" for p, (kind, msg) in failures.items()]
    good = [i for i, p in enumerate(paths) if p not in failures]
    if not good:
        raise DataError(f"{folder}: no readable images in class subfolders ({len(problems)} problem(s))")
    labels = np.array([classes.index(entries[i][2]) for i in good], dtype=np.int64)
    return images[good], labels, problems


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name.lower() in IGNORED or name.startswith("~$")


def _walk_files(top: Path, root: Path, check: DataCheck) -> list[str]:
    """Every non-hidden file under `top`, as paths relative to `root`, sorted (string paths:
    pathlib costs seconds on 50,000 files)."""
    found = []
    root_str = str(root)
    for dirpath, dirnames, filenames in os.walk(top):
        hidden = [d for d in dirnames if _is_ignored(d)]
        check.ignored += len(hidden)
        dirnames[:] = sorted(d for d in dirnames if not _is_ignored(d))
        rel_dir = os.path.relpath(dirpath, root_str)
        for f in filenames:
            if _is_ignored(f):
                check.ignored += 1
            else:
                found.append(f"{rel_dir}/{f}" if os.sep == "/" else os.path.join(rel_dir, f))
    return sorted(found)


def scan_folder(folder: str | os.PathLike) -> tuple[DataCheck, list[tuple[str, str, str]]]:
    """Find the layout, classes and files: (check so far, [(relative path, split, class)])."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}" if not root.exists() else f"{root} is a file, not a folder")
    try:
        top = sorted(p for p in root.iterdir() if not _is_ignored(p.name))
    except OSError as exc:
        raise DataError(f"cannot read {root}: {exc.strerror or exc}") from exc
    dirs = [p for p in top if p.is_dir()]
    check = DataCheck(root=str(root), layout="classes")
    check.skipped += [(p.name, "not in a class folder") for p in top if not p.is_dir()]
    split_dirs = {p.name.lower(): p for p in dirs if p.name.lower() in SPLIT_FOLDERS}
    if "train" in split_dirs:
        others = [p.name for p in dirs if p.name.lower() not in SPLIT_FOLDERS]
        if others:
            raise DataError(f"{root} has a train/ folder and also {', '.join(others)}: put every class folder "
                            "inside train/ (and val/ or test/), or drop the train/ level")  # fmt: skip
        check.layout = "splits"
        sources = {SPLIT_FOLDERS[name]: path for name, path in split_dirs.items()}
    else:
        sources = {"": root}
    entries: list[tuple[str, str, str]] = []
    class_dirs: dict[str, list[Path]] = {}
    for split, base in sorted(sources.items()):
        for sub in sorted(p for p in base.iterdir() if not _is_ignored(p.name)) if base != root else dirs:
            if not sub.is_dir():
                check.skipped.append((str(sub.relative_to(root)), "not in a class folder"))
                continue
            name = unicodedata.normalize("NFC", sub.name)
            class_dirs.setdefault(name, []).append(sub)
            entries += [(f, split or "all", name) for f in _walk_files(sub, root, check)]
    train_split = "train" if check.layout == "splits" else "all"
    with_files = {c for _, s, c in entries if s == train_split}
    check.classes = sorted(with_files)
    check.empty_classes = sorted({c for c in class_dirs if c not in with_files})
    unknown = sorted({c for _, s, c in entries if s != train_split and c not in with_files})
    if unknown:
        check.errors.append(f"classes {', '.join(unknown)} have val/test images but no training images")
    return check, entries


def _cache_path(root: Path, image_size: int) -> Path:
    from cifar_cnn.data import cache_dir

    key = hashlib.sha256(f"{root.resolve()}|{image_size}|{CACHE_VERSION}".encode()).hexdigest()[:20]
    return cache_dir() / "folders" / f"{key}.npz"


def _file_key(root: str, rel: str) -> str:
    st = os.stat(os.path.join(root, rel))
    return f"{rel}\0{st.st_size}\0{st.st_mtime_ns}"


def _decode_one(args: tuple[str, str, int]) -> tuple[np.ndarray | None, str, str, str]:
    """(image or None, digest of the file's bytes, error kind, error message). Runs in workers."""
    from cifar_cnn.images import MAX_BYTES, load_image

    path, name, size = args
    try:
        nbytes = os.path.getsize(path)
        if nbytes > MAX_BYTES:
            return None, "", "too_large", f"{nbytes / 2**20:.0f} MiB, over the {MAX_BYTES // 2**20} MiB limit"
        with open(path, "rb") as f:
            data = f.read()
        digest = hashlib.blake2b(data, digest_size=16).hexdigest()
        return load_image(data, size, name=name), digest, "", ""
    except ImageError as exc:
        message = str(exc)
        return None, "", exc.kind, message[len(name) + 2 :] if message.startswith(f"{name}: ") else message
    except OSError as exc:
        return None, "", "missing", exc.strerror or str(exc)


def decode_files(root: Path, paths: list[str], size: int, workers: int | None = None, progress: bool = True,
                 cache: bool = True) -> tuple[np.ndarray, list[str], dict[str, tuple[str, str]]]:  # fmt: skip
    """Decode files (relative to `root`) to uint8 (N, size, size, 3), in parallel, with a progress
    bar and a per-file cache. Returns (images, byte digests, {path: (error kind, message)}); a
    failed file leaves zeros in its row."""
    from tqdm.auto import tqdm

    cache_file = _cache_path(root, size)
    cached: dict[str, int] = {}
    old = None
    if cache and cache_file.is_file():
        try:
            old = dict(np.load(cache_file, allow_pickle=False))
            cached = {k: i for i, k in enumerate(old["keys"].tolist())}
        except (OSError, ValueError, KeyError):
            old, cached = None, {}  # a damaged cache is rebuilt
    keys = []
    for p in paths:
        try:
            keys.append(_file_key(str(root), p))
        except OSError:
            keys.append(f"{p}\0missing")
    images = np.zeros((len(paths), size, size, 3), np.uint8)
    digests, kinds, messages = [""] * len(paths), [""] * len(paths), [""] * len(paths)
    todo = []
    for i, k in enumerate(keys):
        j = cached.get(k)
        if j is None or old is None:
            todo.append(i)
        else:
            images[i], digests[i], kinds[i], messages[i] = old["images"][j], old["digests"][j], old["kinds"][j], old["messages"][j]  # fmt: skip
    if todo:
        jobs = [(str(root / paths[i]), paths[i], size) for i in todo]
        bar = tqdm(total=len(jobs), desc=f"decoding {len(jobs)} images", unit="img", disable=not progress,
                   dynamic_ncols=True, mininterval=0.5)  # fmt: skip
        for i, (img, digest, kind, message) in zip(todo, _map(jobs, workers), strict=True):
            if img is not None:
                images[i] = img
            digests[i], kinds[i], messages[i] = digest, kind, message
            bar.update()
        bar.close()
        if cache:
            _write_cache(cache_file, keys, images, digests, kinds, messages)
    failures = {p: (kinds[i], messages[i]) for i, p in enumerate(paths) if kinds[i]}
    return images, digests, failures


def _map(jobs: list, workers: int | None):
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(jobs) < PARALLEL_FROM:
        yield from map(_decode_one, jobs)
        return
    import multiprocessing as mp

    # fork starts workers in milliseconds; they only run Pillow and numpy, so the parent's
    # threads (torch's) do not matter. Elsewhere spawn, which re-imports the package.
    context = mp.get_context("fork" if sys.platform == "linux" else "spawn")
    with ProcessPoolExecutor(workers, mp_context=context) as pool:
        yield from pool.map(_decode_one, jobs, chunksize=max(16, min(512, len(jobs) // (workers * 8))))


def _write_cache(path: Path, keys, images, digests, kinds, messages) -> None:
    import io

    from cifar_cnn.checkpoint import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, keys=np.array(keys), images=images, digests=np.array(digests), kinds=np.array(kinds),
             messages=np.array(messages))  # fmt: skip
    with contextlib.suppress(CifarCnnError):  # a cache that cannot be written only costs time next run
        atomic_write_bytes(path, buf.getvalue())


def _assemble(root: Path, check: DataCheck, entries, images: np.ndarray, digests: list[str], image_size: int,
              val_fraction: float, seed: int) -> ImageDataset:  # fmt: skip
    train_split = "train" if check.layout == "splits" else "all"
    readable = {c for _, s, c in entries if s == train_split}
    check.empty_classes = sorted(set(check.empty_classes) | (set(check.classes) - readable))
    check.classes = classes = sorted(readable)
    index = {c: i for i, c in enumerate(classes)}
    keep = [i for i, (_, _, c) in enumerate(entries) if c in index]
    entries, images, digests = [entries[i] for i in keep], images[keep], [digests[i] for i in keep]
    labels = np.array([index[c] for _, _, c in entries], dtype=np.int64)
    splits = np.array([s for _, s, _ in entries], dtype="<U5")  # "all" until split: train, val, test
    _find_duplicates(check, entries, digests)
    auto_split = not (splits == "val").any()
    if auto_split:
        pool = np.flatnonzero(np.isin(splits, ["all", "train"]))
        val_idx = stratified_split(labels[pool], [digests[i] for i in pool], val_fraction, seed, classes, check)
        splits[pool] = "train"
        splits[pool[val_idx]] = "val"
    _check_classes(check, classes, labels, splits, auto_split and val_fraction > 0)
    parts = {s: np.flatnonzero(splits == s) for s in ("train", "val", "test")}
    check.counts = {s: {c: int((labels[idx] == i).sum()) for i, c in enumerate(classes)}
                    for s, idx in parts.items() if len(idx)}  # fmt: skip
    if check.errors:
        error = DataError(f"{root}: " + "; ".join(check.errors) + " (`cifar-cnn data check` lists everything)")
        error.check = check  # type: ignore[attr-defined]
        raise error
    train_x = images[parts["train"]]
    mean, std = channel_stats(train_x)
    test_split = "test" if len(parts["test"]) else "val"
    return ImageDataset(
        name=str(root), classes=classes, train_x=train_x, train_y=labels[parts["train"]],
        val_x=images[parts["val"]], val_y=labels[parts["val"]],
        test_x=images[parts[test_split]], test_y=labels[parts[test_split]],
        mean=mean, std=std, input_size=image_size, sha256=hashlib.sha256(images.tobytes()).hexdigest(),
        test_split=test_split, files={s: [entries[i][0] for i in idx] for s, idx in parts.items()}, check=check,
        split={"val_fraction": val_fraction, "seed": seed},
    )  # fmt: skip


def stratified_split(labels: np.ndarray, digests: list[str], fraction: float, seed: int, classes: list[str],
                     check: DataCheck) -> np.ndarray:  # fmt: skip
    """Indices of a seeded validation sample of `fraction` of each class. Identical files form one
    group that goes wholly to one side, so the split never leaks a copy of a training image."""
    if fraction == 0:
        check.warnings.append("no validation split (--val-fraction 0): calibration and the uncertain flag are off")
        return np.array([], dtype=np.int64)
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    for c in range(len(classes)):
        members = np.flatnonzero(labels == c)
        groups: dict[str, list[int]] = defaultdict(list)
        for i in members:
            groups[digests[i]].append(int(i))
        order = list(groups.values())
        rng.shuffle(order)  # type: ignore[arg-type]
        target = max(1, round(len(members) * fraction))
        taken = 0
        for group in order:
            if taken >= target or len(members) - taken - len(group) < 1:
                break
            chosen += group
            taken += len(group)
    return np.array(sorted(chosen), dtype=np.int64)


def _find_duplicates(check: DataCheck, entries, digests: list[str]) -> None:
    by_digest: dict[str, list[int]] = defaultdict(list)
    for i, d in enumerate(digests):
        by_digest[d].append(i)
    for group in by_digest.values():
        if len(group) < 2:
            continue
        files = [entries[i][0] for i in group]
        classes = {entries[i][2] for i in group}
        splits = {entries[i][1] for i in group}
        if len(classes) > 1:
            check.duplicates_across_classes.append(files)
        elif len(splits) > 1 and "train" in splits:
            check.leaks.append(files)
        else:
            check.duplicates_in_class.append(files)
    if check.duplicates_across_classes:
        check.warnings.append(f"{len(check.duplicates_across_classes)} image(s) appear in more than one class: "
                              "check their labels")  # fmt: skip
    if check.leaks:
        check.warnings.append(
            f"{len(check.leaks)} training image(s) also appear in val/test (a leak): their scores are inflated"
        )


def _check_classes(check: DataCheck, classes: list[str], labels: np.ndarray, splits: np.ndarray,
                   auto_split: bool) -> None:  # fmt: skip
    for c in check.empty_classes:
        check.warnings.append(f"class folder {c!r} holds no readable images: left out")
    if len(classes) < 2:
        found = f"found {len(classes)}: {', '.join(classes)}" if classes else "found none"
        check.errors.append(f"need at least 2 class folders with images ({found}); put each class's images in a "
                            "subfolder named after the class")  # fmt: skip
        return
    if len(classes) > MAX_CLASSES:
        check.errors.append(f"{len(classes)} classes is over the limit of {MAX_CLASSES}")
    train_counts = np.bincount(labels[splits == "train"], minlength=len(classes))
    if auto_split:
        totals = np.bincount(labels[np.isin(splits, ["train", "val"])], minlength=len(classes))
        small = [f"{c!r} ({n} image{'s' * (int(n) != 1)})" for c, n in zip(classes, totals, strict=True)
                 if n < MIN_IMAGES_PER_CLASS]  # fmt: skip
        if small:
            check.errors.append(f"too few images to split for class {', '.join(small)}: each class needs at least "
                                f"{MIN_IMAGES_PER_CLASS} (one to train on, one to validate); add images or remove "
                                "the folder")  # fmt: skip
            return
    if train_counts.min() > 0 and train_counts.max() / train_counts.min() > IMBALANCE_RATIO:
        big, little = classes[int(train_counts.argmax())], classes[int(train_counts.argmin())]
        check.warnings.append(f"classes are imbalanced ({big!r}: {train_counts.max()} training images, {little!r}: "
                              f"{train_counts.min()}): consider --class-weights")  # fmt: skip


def channel_stats(images: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std in [0, 1] of uint8 images (N, H, W, 3), exact, from a histogram
    of each channel's 256 values (fast, and no float copy of the data)."""
    if not len(images):
        return CIFAR10_MEAN, CIFAR10_STD
    values = np.arange(256) / 255
    mean, std = [], []
    for c in range(3):
        counts = np.bincount(images[..., c].ravel(), minlength=256)
        m = float(counts @ values / counts.sum())
        mean.append(round(m, 4))
        std.append(round(max(float(np.sqrt(counts @ (values - m) ** 2 / counts.sum())), 1e-3), 4))
    return tuple(mean), tuple(std)

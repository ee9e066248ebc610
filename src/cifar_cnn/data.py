"""CIFAR-10: find, verify, decode and cache it, with the contract of keras.datasets.cifar10.

`load_cifar10()` returns `((x_train, y_train), (x_test, y_test))`: uint8 images (N, 32, 32, 3)
and uint8 labels (N, 1), like `keras.datasets.cifar10.load_data()`. Class names are in
`CLASS_NAMES` (or pass `with_class_names=True`).

Where it looks, in order: an explicit `path`, `$CIFAR_CNN_DATA`, the user cache folder, and
else a download of the official archive (checksum-verified, written atomically).
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import sys
import tarfile
import tempfile
import urllib.request
from pathlib import Path

import numpy as np

from cifar_cnn.errors import DataError

CLASS_NAMES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e9910a4"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
FOLDER_NAME = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CACHE_VERSION = 1

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def cache_dir() -> Path:
    """The user cache folder: $XDG_CACHE_HOME/cifar-cnn (default ~/.cache/cifar-cnn)."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cifar-cnn"


def load_cifar10(
    path: str | os.PathLike | None = None,
    *,
    download: bool = True,
    with_class_names: bool = False,
    verbose: bool = True,
) -> Arrays | tuple[Arrays, tuple[str, ...]]:
    """Load CIFAR-10 as uint8 arrays, decoding the archive once into a `.npz` cache.

    Args:
        path: a `cifar-10-batches-py` folder, a `cifar-10-python.tar.gz` archive, or a folder
            holding either. Default: `$CIFAR_CNN_DATA`, then the cache folder, then download.
        download: allow downloading the official archive when no local copy is found.
        with_class_names: also return the class names, as `(arrays, class_names)`.

    Raises:
        DataError: the data is missing, corrupt, truncated or not CIFAR-10; the message says
            which file and what to do.
    """
    source = locate(path, download=download, verbose=verbose)
    arrays = _load_cached(source, verbose=verbose)
    return (arrays, CLASS_NAMES) if with_class_names else arrays


def locate(path: str | os.PathLike | None = None, *, download: bool = True, verbose: bool = True) -> Path:
    """Return the folder or archive to read CIFAR-10 from (see `load_cifar10` for the order)."""
    if path is not None:
        found = _find_in(Path(path))
        if found is None:
            raise DataError(
                f"no CIFAR-10 found at {path}: give a '{FOLDER_NAME}' folder, a '{ARCHIVE_NAME}' "
                "archive, or a folder that holds one"
            )
        return found
    env = os.environ.get("CIFAR_CNN_DATA")
    if env:
        found = _find_in(Path(env))
        if found is None:
            raise DataError(f"CIFAR_CNN_DATA={env} holds no '{FOLDER_NAME}' folder or '{ARCHIVE_NAME}' archive")
        return found
    found = _find_in(cache_dir())
    if found is not None:
        return found
    # A copy decoded earlier (from any source) stays usable, like keras' ~/.keras/datasets.
    decoded = sorted(cache_dir().glob("cifar10-*.npz"), key=lambda p: p.stat().st_mtime)
    if decoded:
        return decoded[-1]
    if not download:
        raise DataError(
            f"CIFAR-10 not found in {cache_dir()}; set CIFAR_CNN_DATA to a folder with '{ARCHIVE_NAME}' or allow download"
        )
    return download_archive(cache_dir() / ARCHIVE_NAME, verbose=verbose)


def is_cifar10_source(path: str | os.PathLike) -> bool:
    """Whether `path` is (or holds) the CIFAR-10 archive or batches folder, rather than a
    labelled image folder."""
    return _find_in(Path(path)) is not None


def _find_in(path: Path) -> Path | None:
    if path.is_file():
        return path
    if (path / TEST_BATCH).is_file():
        return path
    for candidate in (path / FOLDER_NAME, path / ARCHIVE_NAME):
        if candidate.exists():
            return candidate
    return None


def download_archive(dest: Path, url: str = URL, md5: str = OFFICIAL_MD5, verbose: bool = True) -> Path:
    """Stream `url` to `dest` with a progress bar, verify its MD5, then rename into place.

    The file appears at `dest` only once complete and verified, so an interrupted download is
    never mistaken for a good archive.
    """
    from tqdm.auto import tqdm

    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.md5()
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=".download-", suffix=".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length", 0)) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc="CIFAR-10", disable=not verbose) as bar:
                while chunk := response.read(1 << 20):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
        if digest.hexdigest() != md5:
            raise DataError(f"downloaded {url} has MD5 {digest.hexdigest()}, expected {md5}; try again")
        os.replace(tmp, dest)
    except OSError as exc:
        raise DataError(
            f"could not download CIFAR-10 from {url} ({exc}); download it by hand and set "
            f"CIFAR_CNN_DATA to the folder that holds {ARCHIVE_NAME}"
        ) from exc
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return dest


def arrays_sha256(arrays: Arrays) -> str:
    """A checksum of the decoded data itself (images and labels of both splits), stored with
    every model so that its numbers can be traced to the exact data they came from."""
    digest = hashlib.sha256()
    for split in arrays:
        for a in split:
            digest.update(np.ascontiguousarray(a).tobytes())
    return digest.hexdigest()


def sha256sum(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sums(archive: Path) -> None:
    """Check `archive` against a `SHA256SUMS` file beside it, when there is one."""
    sums = archive.parent / "SHA256SUMS"
    if not sums.is_file():
        return
    expected = None
    for line in sums.read_text().splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == archive.name:
            expected = parts[0].lower()
    if expected is not None and sha256sum(archive) != expected:
        raise DataError(
            f"{archive} does not match its checksum in {sums}: the file is corrupt or truncated; "
            "copy or download it again"
        )


def _fingerprint(source: Path) -> str:
    """A cheap identity for a source: path, size and mtime of each file it is made of."""
    files = [source] if source.is_file() else sorted(source.iterdir())
    parts = [f"v{CACHE_VERSION}", str(source.resolve())]
    for f in files:
        st = f.stat()
        parts.append(f"{f.name}:{st.st_size}:{st.st_mtime_ns}")
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _load_cached(source: Path, verbose: bool) -> Arrays:
    cache = source if source.suffix == ".npz" else cache_dir() / f"cifar10-{_fingerprint(source)}.npz"
    if cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                return (z["x_train"], z["y_train"]), (z["x_test"], z["y_test"])
        except (OSError, ValueError, KeyError, EOFError):
            cache.unlink(missing_ok=True)  # a damaged cache is rebuilt, never trusted
            if cache == source:
                raise DataError(f"the cached copy {cache} was damaged and is removed; run again") from None
    if verbose:
        print(f"Decoding CIFAR-10 from {source} (once; cached in {cache.parent})", file=sys.stderr, flush=True)
    arrays = read_source(source)
    try:
        _save_npz_atomic(cache, arrays)
    except OSError as exc:  # a read-only or full cache folder only costs speed
        if verbose:
            print(f"warning: could not write the cache {cache}: {exc}", file=sys.stderr)
    return arrays


def _save_npz_atomic(cache: Path, arrays: Arrays) -> None:
    (x_train, y_train), (x_test, y_test) = arrays
    cache.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=".cache-", suffix=".npz")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
        os.replace(tmp, cache)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def read_source(source: Path) -> Arrays:
    """Decode the official python-pickle layout from a folder or a .tar.gz archive."""
    if source.is_dir():
        blobs = {}
        for name in (*TRAIN_BATCHES, TEST_BATCH):
            f = source / name
            if not f.is_file():
                raise DataError(f"{source} has no '{name}': not a complete '{FOLDER_NAME}' folder")
            blobs[name] = f.read_bytes()
    else:
        verify_sums(source)
        blobs = _read_archive(source)
    train = [_decode_batch(blobs[n], f"{source}:{n}") for n in TRAIN_BATCHES]
    x_test, y_test = _decode_batch(blobs[TEST_BATCH], f"{source}:{TEST_BATCH}")
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    return (x_train, y_train), (x_test, y_test)


def _read_archive(archive: Path) -> dict[str, bytes]:
    wanted = {f"{FOLDER_NAME}/{n}": n for n in (*TRAIN_BATCHES, TEST_BATCH)}
    blobs: dict[str, bytes] = {}
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = wanted.get(member.name.lstrip("./"))
                if name and member.isfile():
                    blobs[name] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise DataError(
            f"{archive} is not a readable CIFAR-10 archive ({exc}); it may be corrupt or truncated: "
            "delete it and download or copy it again"
        ) from exc
    missing = sorted(set(wanted.values()) - set(blobs))
    if missing:
        raise DataError(f"{archive} lacks {', '.join(missing)}: it is not the CIFAR-10 python archive")
    return blobs


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """The official batches are pickled dicts of numpy arrays and lists. Refuse any other class,
    so a tampered archive cannot run code while we decode it."""

    ALLOWED = {
        ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    }  # fmt: skip

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _decode_batch(blob: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = _NumpyOnlyUnpickler(io.BytesIO(blob), encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.uint8)
    except Exception as exc:  # any decoding failure means a bad file; say which
        raise DataError(f"{where} is not a valid CIFAR-10 batch ({exc})") from exc
    if data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data) or labels.max(initial=0) > 9:
        raise DataError(f"{where} has the wrong shape {data.shape} for CIFAR-10 (expected (N, 3072))")
    # Rows are channel-first (3, 32, 32); Keras' contract is (N, 32, 32, 3).
    images = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    return images, labels.reshape(-1, 1)

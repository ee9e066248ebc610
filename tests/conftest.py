import io
import os
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(os.environ.get("CIFAR_CNN_DATA") or Path(__file__).resolve().parents[2] / "shared" / "cifar10")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own cache folder, so nothing leaks between tests or into ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))


def make_batch(n: int, seed: int) -> tuple[dict, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, size=n)
    batch = {
        b"batch_label": b"test",
        b"labels": labels.tolist(),
        b"data": images.transpose(0, 3, 1, 2).reshape(n, 3072).copy(),  # channel-first rows
        b"filenames": [f"img{i}.png".encode() for i in range(n)],
    }
    return batch, images, labels


def write_official_archive(path: Path, n: int = 20) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A tiny CIFAR-10 archive in the official layout: 5 train batches of n, a test batch of n."""
    train_x, train_y = [], []
    members = {}
    for i in range(1, 6):
        batch, x, y = make_batch(n, i)
        members[f"data_batch_{i}"] = pickle.dumps(batch)
        train_x.append(x)
        train_y.append(y)
    batch, test_x, test_y = make_batch(n, 99)
    members["test_batch"] = pickle.dumps(batch)
    members["batches.meta"] = pickle.dumps({b"label_names": [b"airplane"] * 10})
    with tarfile.open(path, "w:gz") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))
    return np.concatenate(train_x), np.concatenate(train_y), test_x, test_y


@pytest.fixture
def tiny_archive(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    arrays = write_official_archive(archive)
    return archive, arrays


@pytest.fixture(scope="session")
def real_data():
    """The shared CIFAR-10 copy (skips where it is absent; CI has it)."""
    if not (SHARED / "cifar-10-python.tar.gz").is_file():
        pytest.skip(f"no shared CIFAR-10 at {SHARED}")
    from cifar_cnn.data import load_cifar10

    return load_cifar10(SHARED, verbose=False)


@pytest.fixture
def tiny_data():
    """Random uint8 images with labels, in the load_cifar10 layout."""
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8)
    y_train = rng.integers(0, 10, (64, 1)).astype(np.uint8)
    x_test = rng.integers(0, 256, (32, 32, 32, 3), dtype=np.uint8)
    y_test = rng.integers(0, 10, (32, 1)).astype(np.uint8)
    return (x_train, y_train), (x_test, y_test)


@pytest.fixture(scope="session")
def model_file(tmp_path_factory):
    """A small keras_cnn model file trained for one epoch on random images (fast to make)."""
    from cifar_cnn.train import train

    rng = np.random.default_rng(0)
    data = ((rng.integers(0, 256, (64, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, (64, 1)).astype(np.uint8)),
            (rng.integers(0, 256, (16, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, (16, 1)).astype(np.uint8)))  # fmt: skip
    out = tmp_path_factory.mktemp("run")
    return train("keras_cnn", data=data, epochs=1, out_dir=out, progress=False).model_path


OWN_CLASSES = {"red": (215, 45, 40), "grün": (45, 185, 65), "blue sky": (70, 125, 225)}  # Unicode, a space


def make_own_folder(root: Path, per_class: int = 12) -> Path:
    """A labelled folder of 3 colour classes (one Unicode name, one with a space): noisy images of
    assorted sizes and formats, so decoding and resizing to the model's input size are exercised."""
    from PIL import Image

    rng = np.random.default_rng(7)
    for name, rgb in OWN_CLASSES.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            h, w = (40 + 13 * (i % 4), 48 + 17 * (i % 3))
            pixels = np.clip(np.array(rgb) + rng.normal(0, 35, (h, w, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.{'jpg' if i % 3 == 0 else 'png'}")
    return root


@pytest.fixture(scope="session")
def own_folder(tmp_path_factory) -> Path:
    return make_own_folder(tmp_path_factory.mktemp("own") / "photos")


def _train_folder_model(folder: Path, out: Path, image_size: int) -> Path:
    from cifar_cnn.train import train

    result = train("keras_cnn", data=str(folder), epochs=3, out_dir=out, progress=False, init="scratch",
                   image_size=image_size)  # fmt: skip
    return result.model_path


@pytest.fixture(scope="session")
def folder_model(own_folder, tmp_path_factory) -> Path:
    """keras_cnn trained briefly on `own_folder`: classes ["blue sky", "grün", "red"], 32 px input."""
    return _train_folder_model(own_folder, tmp_path_factory.mktemp("folder_run"), 32)


@pytest.fixture(scope="session")
def folder_model_64(own_folder, tmp_path_factory) -> Path:
    """The same 3 classes at a 64 px input size."""
    return _train_folder_model(own_folder, tmp_path_factory.mktemp("folder_run_64"), 64)

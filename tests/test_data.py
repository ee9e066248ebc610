import hashlib
import io
import pickle
import tarfile
import time

import numpy as np
import pytest

from cifar_cnn.data import cache_dir, load_cifar10, locate
from cifar_cnn.errors import DataError


def test_contract_matches_keras(tiny_archive):
    archive, (train_x, train_y, test_x, _test_y) = tiny_archive
    (x_train, y_train), (x_test, y_test) = load_cifar10(archive, verbose=False)
    assert x_train.shape == (100, 32, 32, 3) and x_train.dtype == np.uint8
    assert y_train.shape == (100, 1) and y_train.dtype == np.uint8
    assert x_test.shape == (20, 32, 32, 3) and y_test.shape == (20, 1)
    np.testing.assert_array_equal(x_train, train_x)  # channel-first rows became HWC correctly
    np.testing.assert_array_equal(y_train.ravel(), train_y)
    np.testing.assert_array_equal(x_test, test_x)


def test_with_class_names(tiny_archive):
    archive, _ = tiny_archive
    _, names = load_cifar10(archive, with_class_names=True, verbose=False)
    assert names[0] == "airplane" and names[-1] == "truck" and len(names) == 10


def test_second_load_comes_from_cache(tiny_archive):
    archive, _ = tiny_archive
    first = load_cifar10(archive, verbose=False)
    assert list(cache_dir().glob("cifar10-*.npz"))
    t = time.perf_counter()
    second = load_cifar10(archive, verbose=False)
    assert time.perf_counter() - t < 1.0
    np.testing.assert_array_equal(first[0][0], second[0][0])


def test_extracted_folder_and_env_variable(tiny_archive, tmp_path, monkeypatch):
    archive, (train_x, *_) = tiny_archive
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "extracted", filter="data")
    folder = tmp_path / "extracted" / "cifar-10-batches-py"
    (x_train, _), _ = load_cifar10(folder, verbose=False)
    np.testing.assert_array_equal(x_train, train_x)
    monkeypatch.setenv("CIFAR_CNN_DATA", str(tmp_path / "extracted"))
    assert locate() == folder


def test_checksum_mismatch_is_reported(tiny_archive):
    archive, _ = tiny_archive
    (archive.parent / "SHA256SUMS").write_text(f"{'0' * 64}  {archive.name}\n")
    with pytest.raises(DataError, match="checksum"):
        load_cifar10(archive, verbose=False)


def test_matching_checksum_passes(tiny_archive):
    archive, _ = tiny_archive
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    (archive.parent / "SHA256SUMS").write_text(f"{digest}  {archive.name}\n")
    load_cifar10(archive, verbose=False)


def test_truncated_archive_is_a_clear_error(tiny_archive):
    archive, _ = tiny_archive
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_cifar10(archive, verbose=False)


def test_wrong_archive_is_a_clear_error(tmp_path):
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo("something/else.txt")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"hi"))
    with pytest.raises(DataError, match="lacks"):
        load_cifar10(archive, verbose=False)


def test_not_an_archive(tmp_path):
    bogus = tmp_path / "cifar-10-python.tar.gz"
    bogus.write_text("this is not a tarball")
    with pytest.raises(DataError, match=str(bogus)):
        load_cifar10(bogus, verbose=False)


def test_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Evil(), b"labels": []}))
    with pytest.raises(DataError, match="not a valid CIFAR-10 batch"):
        load_cifar10(folder, verbose=False)


def test_missing_data_without_download(tmp_path, monkeypatch):
    monkeypatch.delenv("CIFAR_CNN_DATA", raising=False)
    with pytest.raises(DataError, match="not found"):
        load_cifar10(download=False, verbose=False)
    with pytest.raises(DataError, match="no CIFAR-10 found"):
        load_cifar10(tmp_path / "nowhere", verbose=False)


@pytest.mark.slow
def test_real_shared_copy(real_data):
    (x_train, y_train), (x_test, y_test) = real_data
    assert x_train.shape == (50000, 32, 32, 3) and x_test.shape == (10000, 32, 32, 3)
    assert y_train.shape == (50000, 1) and y_train.dtype == np.uint8
    assert np.bincount(y_train.ravel()).tolist() == [5000] * 10
    assert np.bincount(y_test.ravel()).tolist() == [1000] * 10


def test_decoded_copy_is_found_without_the_source(tiny_archive, monkeypatch):
    archive, (train_x, *_) = tiny_archive
    monkeypatch.delenv("CIFAR_CNN_DATA", raising=False)
    load_cifar10(archive, verbose=False)
    archive.unlink()  # e.g. the shared folder is gone, or the user is outside `make`
    (x_train, _), _ = load_cifar10(download=False, verbose=False)
    np.testing.assert_array_equal(x_train, train_x)

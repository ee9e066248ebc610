"""Labelled folders: scanning, checks, splits, cache; the CLI `data check`."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cifar_cnn.cli import main
from cifar_cnn.datasets import check_folder, image_folder, labelled_images, stratified_split
from cifar_cnn.errors import DataError

COLOURS = {"red": (220, 30, 30), "grün": (30, 200, 40), "blue sky": (40, 60, 230)}


def colour_image(rgb, seed: int, size=(40, 30)) -> Image.Image:
    rng = np.random.default_rng(seed)
    a = np.clip(np.array(rgb) + rng.integers(-40, 40, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(a)


def make_colour_folder(root, per_class: int = 10, classes=COLOURS):
    for c, (name, rgb) in enumerate(classes.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour_image(rgb, seed=100 * c + i).save(root / name / f"{i}.png")
    return root


def make_accidents_folder(root):
    """The usual accidents: corrupt file, text file, hidden and system files, nested folders,
    upper-case extensions, Unicode class names, an empty class folder, a one-image class."""
    make_colour_folder(root, per_class=6)
    (root / "red" / "trip" / "day 2").mkdir(parents=True)
    colour_image((220, 30, 30), 7).save(root / "red" / "trip" / "day 2" / "IMG_0001.JPG")  # nested, upper case
    colour_image((220, 30, 30), 8, size=(200, 200)).save(root / "red" / "broken.jpg", quality=95)
    data = (root / "red" / "broken.jpg").read_bytes()
    (root / "red" / "broken.jpg").write_bytes(data[: len(data) // 2])  # a truncated JPEG
    (root / "grün" / "notes.txt").write_text("not an image")
    (root / "grün" / "empty.png").write_bytes(b"")
    (root / "grün" / ".DS_Store").write_bytes(b"\x00\x01")
    (root / "grün" / "Thumbs.db").write_bytes(b"\x00\x01")
    (root / ".hidden").mkdir()
    colour_image((0, 0, 0), 1).save(root / ".hidden" / "x.png")
    (root / "empty class").mkdir()
    (root / "README.txt").write_text("my photos")
    return root


def test_accidents_give_the_right_counts_and_messages(tmp_path):
    root = make_accidents_folder(tmp_path / "photos")
    (root / "lonely").mkdir()
    colour_image((9, 9, 9), 3).save(root / "lonely" / "only.png")
    check = check_folder(root, progress=False)
    assert check.classes == ["blue sky", "grün", "lonely", "red"]  # sorted, Unicode and spaces kept
    assert not check.ok and "too few images to split" in check.errors[0] and "'lonely' (1 image)" in check.errors[0]
    skipped = dict(check.skipped)
    assert skipped["README.txt"] == "not in a class folder"
    assert skipped["red/broken.jpg"].startswith("damaged or truncated")
    assert skipped["grün/notes.txt"].startswith("not an image")
    assert skipped["grün/empty.png"].startswith("empty file")
    assert not any(".DS_Store" in f or "Thumbs.db" in f or ".hidden" in f for f in skipped)  # silently ignored
    assert check.empty_classes == ["empty class"]
    with pytest.raises(DataError, match="too few images to split"):
        image_folder(root, progress=False)

    shutil.rmtree(root / "lonely")
    ds = image_folder(root, progress=False)
    assert ds.classes == ["blue sky", "grün", "red"]
    counts = {c: ds.check.counts["train"][c] + ds.check.counts["val"][c] for c in ds.classes}
    assert counts == {"blue sky": 6, "grün": 6, "red": 7}  # the nested upper-case JPEG counts for red
    assert any("empty class" in w for w in ds.check.warnings)
    assert ds.train_x.shape[1:] == (32, 32, 3) and ds.train_x.dtype == np.uint8
    assert len(ds.train_x) + len(ds.val_x) == 19 and ds.test_split == "val"
    assert "red/trip/day 2/IMG_0001.JPG" in ds.files["train"] + ds.files["val"]
    # statistics of the training images, not CIFAR-10's
    assert ds.mean != (0.4914, 0.4822, 0.4465) and all(0 < s < 1 for s in ds.std)


def test_split_is_stratified_seeded_and_keeps_duplicates_together():
    labels = np.repeat(np.arange(3), [50, 20, 10])  # a folder read class by class
    digests = [f"d{i}" for i in range(80)]
    digests[1] = digests[0]  # two identical files of class 0
    from cifar_cnn.datasets import DataCheck

    a = stratified_split(labels, digests, 0.2, seed=1, classes=["a", "b", "c"], check=DataCheck("x", "classes"))
    b = stratified_split(labels, digests, 0.2, seed=1, classes=["a", "b", "c"], check=DataCheck("x", "classes"))
    c = stratified_split(labels, digests, 0.2, seed=2, classes=["a", "b", "c"], check=DataCheck("x", "classes"))
    assert a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert np.bincount(labels[a], minlength=3).tolist() in ([10, 4, 2], [11, 4, 2])  # 20% of each class
    assert (0 in a) == (1 in a)  # duplicates on the same side: no leak


def test_train_val_test_folders_duplicates_and_leaks(tmp_path):
    root = tmp_path / "ds"
    for split, n in (("train", 8), ("valid", 3), ("test", 3)):
        make_colour_folder(root / split, per_class=n, classes={"a": (200, 0, 0), "b": (0, 0, 200)})
    for split in ("valid", "test"):  # make the split images distinct from the training ones
        for f in (root / split).rglob("*.png"):
            colour_image((200, 0, 0) if f.parent.name == "a" else (0, 0, 200), 999 + hash(str(f)) % 1000).save(f)
    shutil.copy(root / "train" / "a" / "0.png", root / "test" / "a" / "leak.png")  # train/test leak
    shutil.copy(root / "train" / "a" / "1.png", root / "train" / "b" / "mislabelled.png")  # across classes
    shutil.copy(root / "train" / "b" / "2.png", root / "train" / "b" / "copy.png")  # within a class
    ds = image_folder(root, progress=False)
    check = ds.check
    assert check.layout == "splits" and ds.test_split == "test"
    assert (len(ds.train_x), len(ds.val_x), len(ds.test_x)) == (18, 6, 7)
    assert any("test/a/leak.png" in g for g in check.leaks)
    assert any("train/b/mislabelled.png" in g for g in check.duplicates_across_classes)
    assert any("train/b/copy.png" in g for g in check.duplicates_in_class)
    assert any("leak" in w for w in check.warnings) and any("more than one class" in w for w in check.warnings)


def test_too_few_classes_and_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        image_folder(tmp_path / "nope", progress=False)
    make_colour_folder(tmp_path, per_class=3, classes={"only": (1, 2, 3)})
    with pytest.raises(DataError, match="at least 2 class folders"):
        image_folder(tmp_path, progress=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"garbage")
    check = check_folder(tmp_path, progress=False)
    assert check.empty_classes == ["bad"] and not check.ok


def test_cache_reuses_unchanged_files_and_sees_changes(tmp_path, monkeypatch):
    import cifar_cnn.datasets as datasets

    root = make_colour_folder(tmp_path / "f", per_class=5)
    first = image_folder(root, progress=False, image_size=64)
    assert first.train_x.shape[1:] == (64, 64, 3)
    calls = []
    original = datasets._decode_one
    monkeypatch.setattr(datasets, "_decode_one", lambda job: calls.append(job[1]) or original(job))
    second = image_folder(root, progress=False, image_size=64)
    assert calls == [] and np.array_equal(first.train_x, second.train_x)
    colour_image((0, 0, 0), 5, size=(50, 50)).save(root / "red" / "0.png")  # changed: size and mtime differ
    third = image_folder(root, progress=False, image_size=64)
    assert calls == ["red/0.png"] and third.sha256 != first.sha256


def test_parallel_decode_equals_serial(tmp_path, monkeypatch):
    import cifar_cnn.datasets as datasets

    root = make_colour_folder(tmp_path / "f", per_class=12)
    serial = image_folder(root, progress=False, cache=False, workers=1)
    monkeypatch.setattr(datasets, "PARALLEL_FROM", 1)
    parallel = image_folder(root, progress=False, cache=False, workers=2)
    assert np.array_equal(serial.train_x, parallel.train_x) and serial.files == parallel.files


def test_labelled_images_for_evaluation(tmp_path):
    make_colour_folder(tmp_path, per_class=2)
    x, y, problems = labelled_images(tmp_path, ["blue sky", "grün", "red", "other"], 32, progress=False)
    assert x.shape == (6, 32, 32, 3) and sorted(set(y.tolist())) == [0, 1, 2] and problems == []
    with pytest.raises(DataError, match="not classes of the model"):
        labelled_images(tmp_path, ["red"], 32, progress=False)


def test_cli_data_check(tmp_path, capsys):
    root = make_accidents_folder(tmp_path / "photos")
    assert main(["data", "check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "grün" in out and "blue sky" in out and "not an image" in out and "OK: ready to train" in out
    assert main(["data", "check", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["classes"] == ["blue sky", "grün", "red"] and report["empty_classes"] == ["empty class"]
    (root / "grün").rename(root / ".grün")  # hidden: ignored
    shutil.rmtree(root / "blue sky")  # one class left
    assert main(["data", "check", str(root)]) == 1
    assert "at least 2 class folders" in capsys.readouterr().out
    assert main(["data", "check", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err

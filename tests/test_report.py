import json

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_cnn.calibrate import calibrate, expected_calibration_error, fit_temperature
from cifar_cnn.cli import main
from cifar_cnn.data import load_image_folder
from cifar_cnn.errors import DataError
from cifar_cnn.ood import auroc, out_of_distribution_set
from cifar_cnn.predict import load
from cifar_cnn.report import build_report, most_confused, per_class_scores, wilson_interval


def overconfident_logits(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """A classifier that is right ~70% of the time but speaks with ~99% confidence."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, n)
    guess = np.where(rng.random(n) < 0.7, labels, rng.integers(0, 10, n))
    logits = rng.normal(0, 1, (n, 10))
    logits[np.arange(n), guess] += 4
    return torch.tensor(logits * 3, dtype=torch.float32), labels


def test_temperature_scaling_lowers_ece_on_held_out_data():
    fit_logits, fit_labels = overconfident_logits(2000, 0)
    test_logits, test_labels = overconfident_logits(2000, 1)  # held out: not used for fitting
    t = fit_temperature(fit_logits, torch.tensor(fit_labels))
    assert t > 1.5  # overconfident -> softened
    before = expected_calibration_error(torch.softmax(test_logits, 1).numpy(), test_labels)
    after = expected_calibration_error(torch.softmax(test_logits / t, 1).numpy(), test_labels)
    assert after < 0.75 * before, (before, after)
    summary = calibrate(fit_logits, fit_labels)
    assert summary["holdout_ece_after"] < summary["holdout_ece_before"]
    assert 0 < summary["uncertain_threshold"] < 1


def test_ece_of_a_perfectly_calibrated_toy():
    probs = np.array([[0.8, 0.2]] * 10)
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)


def test_wilson_interval_and_scores():
    lo, hi = wilson_interval(90, 100)
    assert lo < 0.9 < hi and hi - lo == pytest.approx(0.117, abs=0.005)
    confusion = np.array([[8, 2], [4, 6]])
    scores = per_class_scores(confusion)
    assert scores["precision"][0] == pytest.approx(8 / 12) and scores["recall"][0] == pytest.approx(0.8)
    assert scores["f1"][1] == pytest.approx(2 * 0.75 * 0.6 / 1.35)
    assert most_confused(confusion, ["a", "b"]) == [("b", "a", 4), ("a", "b", 2)]


def test_auroc():
    assert auroc(np.array([0.9, 0.8]), np.array([0.1, 0.2])) == 1.0
    assert auroc(np.array([0.1]), np.array([0.9])) == 0.0
    assert auroc(np.array([0.5, 0.5]), np.array([0.5])) == 0.5


def test_ood_set_is_varied():
    x = out_of_distribution_set(n_synthetic=70, crops_per_image=5)
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3) and len(x) > 100
    assert len({img.tobytes() for img in x}) > 0.9 * len(x)


def test_report_numbers_match_direct_computation(model_file, tmp_path):
    clf = load(model_file)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (300, 1)).astype(np.uint8)
    report = build_report(clf, images, labels, tmp_path / "r", ood=True)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    probs = clf.predict_proba(images)
    predicted = probs.argmax(1)
    assert summary["accuracy"] == pytest.approx((predicted == labels.ravel()).mean())
    confusion = np.zeros((10, 10), int)
    np.add.at(confusion, (labels.ravel(), predicted), 1)
    assert summary["confusion_matrix"] == confusion.tolist()
    cat = clf.classes.index("cat")
    tp = confusion[cat, cat]
    assert summary["per_class"]["cat"]["recall"] == pytest.approx(tp / max(confusion[cat].sum(), 1))
    assert summary["ece_after"] == pytest.approx(expected_calibration_error(probs, labels.ravel()))
    for name in ("confusion_matrix", "worst_mistakes", "correct_per_class", "reliability", "training_curves", "ood"):
        png = tmp_path / "r" / f"{name}.png"
        assert png.is_file() and Image.open(png).size[0] > 200
    page = report.html_path.read_text()
    assert "data:image/png;base64," in page and f"{summary['accuracy']:.2%}" in page
    assert "AUROC" in report.text()


def make_folder(root, files: dict[str, list[tuple[str, bytes | None]]]):
    for cls, items in files.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for name, data in items:
            if data is None:
                Image.new("RGB", (50, 40), (200, 30, 30)).save(root / cls / name)
            else:
                (root / cls / name).write_bytes(data)


def test_image_folder_evaluation(tmp_path, model_file, capsys):
    make_folder(tmp_path, {"cat": [("a.jpg", None), ("b.png", None), ("broken.jpg", b"nope")], "dog": [("c.webp", None)],
                           "truck": []})  # fmt: skip
    x, y, problems = load_image_folder(tmp_path)
    assert x.shape == (3, 32, 32, 3) and y.ravel().tolist() == [3, 3, 5]
    assert any("broken.jpg" in p for p in problems) and any("empty folder" in p for p in problems)
    assert main(["evaluate", str(model_file), "--images", str(tmp_path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["n"] == 3 and "broken.jpg" in err
    assert main(["report", str(model_file), "--images", str(tmp_path), "--out", str(tmp_path / "rep"), "--no-ood"]) == 0
    assert (tmp_path / "rep" / "report.html").is_file()


def test_image_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="no subfolders"):
        load_image_folder(tmp_path)
    make_folder(tmp_path, {"cats": [("a.jpg", None)]})
    with pytest.raises(DataError, match=r"cats.*not class names"):
        load_image_folder(tmp_path)
    (tmp_path / "cats").rename(tmp_path / "cat")
    (tmp_path / "cat" / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no readable images"):
        load_image_folder(tmp_path)


@pytest.mark.slow
def test_data_preview(tmp_path, real_data):
    assert main(["data", "preview", "--out", str(tmp_path)]) == 0
    assert Image.open(tmp_path / "training_images.png").size[0] > 300
    assert Image.open(tmp_path / "augmentation.png").size[0] > 300

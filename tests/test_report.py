import json

import numpy as np
import pytest
import torch
from PIL import Image

from cifar_cnn.calibrate import calibrate, expected_calibration_error, fit_temperature
from cifar_cnn.cli import main
from cifar_cnn.data import CLASS_NAMES
from cifar_cnn.datasets import labelled_images
from cifar_cnn.errors import DataError
from cifar_cnn.ood import auroc, composition, out_of_distribution_set
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
    # Which photo sources exist depends on the machine (scikit-image, Debian's backgrounds), so
    # the count is checked against the composition it reports; matplotlib's are always there.
    made = composition(crops_per_image=5, n_synthetic=70)
    assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3)
    assert len(x) == sum(n for per_source in made.values() for n in per_source.values())
    assert made["natural"]["matplotlib sample_data"] == 6 and len(x) > 70 + 6 + 5
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
    for name in ("confusion_matrix", "worst_mistakes", "correct_per_class", "reliability", "training_curves", "ood",
                 "mistakes_why"):  # fmt: skip
        png = tmp_path / "r" / f"{name}.png"
        assert png.is_file() and Image.open(png).size[0] > 200
    # trained models carry a novelty detector: the report's AUROC is the flag's own score
    assert summary["ood_score"] == "novelty detector (combined_knn)"
    page = report.html_path.read_text()
    assert "data:image/png;base64," in page and f"{summary['accuracy']:.2%}" in page
    assert "AUROC" in report.text()


@pytest.mark.parametrize("detector", [True, False])
def test_report_flag_rates_are_the_predictions_own(detector, tmp_path):
    """The report's "uncertain" rates are those `predict` gives, with the model's detector or without one."""
    clf = load("fast")
    if not detector:
        clf.detector = None  # a file from before detectors: the calibrated top probability alone
    images = np.random.default_rng(1).integers(0, 256, (60, 32, 32, 3), dtype=np.uint8)
    labels = clf.predict_proba(images).argmax(1)
    build_report(clf, images, labels, tmp_path / "r", ood=True)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["ood_score"] == ("novelty detector (combined)" if detector else "calibrated top probability")
    flagged = np.mean([p.uncertain for p in clf.predict(list(images))])
    assert summary["uncertain_rate_in"] == pytest.approx(flagged)


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
    x, y, problems = labelled_images(tmp_path, list(CLASS_NAMES), progress=False)
    assert x.shape == (3, 32, 32, 3) and y.ravel().tolist() == [3, 3, 5]
    assert any("broken.jpg" in p for p in problems) and any("empty folder" in p for p in problems)
    assert main(["evaluate", str(model_file), "--images", str(tmp_path), "--json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["n"] == 3 and "broken.jpg" in err
    assert main(["report", str(model_file), "--images", str(tmp_path), "--out", str(tmp_path / "rep"), "--no-ood"]) == 0
    assert (tmp_path / "rep" / "report.html").is_file()


def test_image_folder_errors(tmp_path):
    classes = list(CLASS_NAMES)
    with pytest.raises(DataError, match="not found"):
        labelled_images(tmp_path / "missing", classes, progress=False)
    with pytest.raises(DataError, match="no readable images in class subfolders"):
        labelled_images(tmp_path, classes, progress=False)
    make_folder(tmp_path, {"cats": [("a.jpg", None)]})
    with pytest.raises(DataError, match=r"cats.*not classes of the model"):
        labelled_images(tmp_path, classes, progress=False)
    (tmp_path / "cats").rename(tmp_path / "cat")
    (tmp_path / "cat" / "a.jpg").write_bytes(b"garbage")
    with pytest.raises(DataError, match="no readable images"):
        labelled_images(tmp_path, classes, progress=False)


@pytest.mark.slow
def test_data_preview(tmp_path, real_data):
    assert main(["data", "preview", "--out", str(tmp_path)]) == 0
    assert Image.open(tmp_path / "training_images.png").size[0] > 300
    assert Image.open(tmp_path / "augmentation.png").size[0] > 300


# ---- any class set and input size ----------------------------------------------------------------


def folder_images(clf, folder):
    """Every image of the folder at the model's input size, labelled by the model's class order."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    images = np.stack([clf.load_image(p) for p in files])
    return images, np.array([clf.classes.index(p.parent.name) for p in files])


def test_report_for_a_folder_model(folder_model, own_folder, tmp_path):
    clf = load(folder_model)
    images, labels = folder_images(clf, own_folder)
    report = build_report(clf, images, labels, tmp_path / "r", dataset="my photos", ood=True)
    summary = json.loads((tmp_path / "r" / "summary.json").read_text(encoding="utf-8"))
    assert summary["classes"] == ["blue sky", "grün", "red"] and summary["class_weights"] is False
    predicted = clf.predict_proba(images).argmax(1)
    for c, name in enumerate(clf.classes):
        recall = ((predicted == c) & (labels == c)).sum() / (labels == c).sum()
        assert summary["per_class_recall"][name] == pytest.approx(recall)
        assert summary["per_class"][name]["recall"] == pytest.approx(recall)
    assert len(summary["confusion_matrix"]) == 3 and summary["ood_n"] > 100
    assert (tmp_path / "r" / "per_class_recall.png").is_file()
    text = report.text()
    assert "per-class recall" in text and "grün" in text and "my photos" in text and "CIFAR" not in text
    page = report.html_path.read_text(encoding="utf-8")
    assert "<td>grün</td>" in page and "<td>blue sky</td>" in page and "CIFAR" not in page


def test_report_for_a_64px_model_resizes_other_sizes(folder_model_64, own_folder, tmp_path):
    clf = load(folder_model_64)
    small = labelled_images(own_folder, clf.classes, progress=False)[0]  # decoded at 32 px: resized to 64 for the model
    assert small.shape[1:] == (32, 32, 3)
    labels = labelled_images(own_folder, clf.classes, progress=False)[1]
    report = build_report(clf, small, labels, tmp_path / "r", ood=False)
    assert report.summary["input_size"] == 64 and report.summary["n"] == len(small)
    assert report.summary["accuracy"] > 0.5  # chance is 1/3: the images reached the model sensibly


@pytest.mark.parametrize("k", [2, 100])
def test_class_figures_for_few_and_many_classes(k, tmp_path):
    from cifar_cnn.report import _confusion_figure, _recall_figure

    rng = np.random.default_rng(k)
    confusion = rng.integers(0, 4, (k, k)) + np.diag(rng.integers(5, 30, k))
    names = [f"Klasse {i} – ü" for i in range(k)]
    for path in (_confusion_figure(confusion, names, tmp_path / "c.png"),
                 _recall_figure(per_class_scores(confusion), names, True, tmp_path / "r.png")):  # fmt: skip
        assert Image.open(path).size[0] > 300


def test_ood_set_at_the_models_input_size():
    x = out_of_distribution_set(n_synthetic=14, crops_per_image=2, size=64)
    assert x.dtype == np.uint8 and x.shape[1:] == (64, 64, 3) and len(x) > 20


FIGURES_CODE = r"""
import sys, matplotlib
import numpy as np
from pathlib import Path
from cifar_cnn.preview import save_previews
from cifar_cnn.report import _confusion_figure
from cifar_cnn.widgets import prediction_figure, figure_png
from cifar_cnn.predict import Prediction
out = Path(sys.argv[1])
rng = np.random.default_rng(0)
save_previews(rng.integers(0, 256, (12, 64, 64, 3), dtype=np.uint8), (np.arange(12) % 3).astype(np.uint8), out,
              classes=["a", "grün", "c"])
_confusion_figure(np.eye(3, dtype=int), ["a", "grün", "c"], out / "c.png")
p = Prediction("grün", 0.9, [("grün", 0.9), ("a", 0.1)])
png = figure_png(prediction_figure(np.zeros((50, 70, 3), np.uint8), np.zeros((64, 64, 3), np.uint8), p))
print(matplotlib.get_backend(), "matplotlib.pyplot" in sys.modules, png[:4] == b"\x89PNG")
"""


def test_figures_leave_the_matplotlib_backend_alone(tmp_path):
    """Report, preview and widget figures render to PNG without pyplot and without switching the
    backend a notebook (or the user) chose."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MPLBACKEND": "svg"}
    out = subprocess.run([sys.executable, "-c", FIGURES_CODE, str(tmp_path)], capture_output=True, text=True,
                         env=env, timeout=300, check=True).stdout  # fmt: skip
    assert out.split() == ["svg", "False", "True"]
    assert (tmp_path / "training_images.png").is_file() and (tmp_path / "augmentation.png").is_file()


def test_cli_report_on_the_folder_models_own_split(folder_model, tmp_path, capsys):
    assert main(["report", str(folder_model), "--out", str(tmp_path / "rep"), "--no-ood"]) == 0
    out = capsys.readouterr().out
    assert "per-class recall" in out and "grün" in out and "split of" in out
    summary = json.loads((tmp_path / "rep" / "summary.json").read_text(encoding="utf-8"))
    assert set(summary["per_class_recall"]) == {"blue sky", "grün", "red"}

"""Your own images end to end: train from a folder, transfer, your own nn.Module, then the CLI."""

import json

import numpy as np
import pytest
import torch
from tests.test_datasets import make_colour_folder
from torch import nn

import cifar_cnn
from cifar_cnn.cli import main
from cifar_cnn.recipes import fit_to_data, get_recipe
from cifar_cnn.transfer import head_names, load_matching


@pytest.fixture(scope="module")
def colour_folder(tmp_path_factory):
    return make_colour_folder(tmp_path_factory.mktemp("colours") / "photos", per_class=12)


@pytest.fixture(scope="module")
def folder_run(colour_folder, tmp_path_factory):
    """keras_cnn trained from scratch for 6 epochs on 3 colour classes (easy: must be learnt)."""
    out = tmp_path_factory.mktemp("run")
    return cifar_cnn.train("keras_cnn", data=str(colour_folder), out_dir=out, epochs=6, init="scratch", progress=False)


def test_folder_model_learns_and_its_card_says_so(folder_run, colour_folder):
    card = folder_run.card
    assert card.classes == ["blue sky", "grün", "red"] and card.input_size == 32
    assert card.metrics["split"] == "val" and folder_run.metrics.accuracy >= 0.8  # chance is 1/3
    assert card.data["name"] == str(colour_folder) and card.data["train_images"] + card.data["val_images"] == 36
    assert card.calibration["holdout_images"] == card.data["val_images"]  # calibrated on validation images only
    assert card.mean != (0.4914, 0.4822, 0.4465)  # the folder's own statistics
    clf = cifar_cnn.load(folder_run.model_path)
    assert clf.predict(str(colour_folder / "red" / "3.png")).label == "red"


def test_cli_round_trip_predict_evaluate_info(folder_run, colour_folder, capsys):
    run_dir = str(folder_run.model_path.parent)
    assert main(["predict", run_dir, str(colour_folder / "grün" / "0.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] == "grün"
    assert main(["evaluate", run_dir, "--json"]) == 0  # default: the folder's own validation split
    result = json.loads(capsys.readouterr().out)
    assert result["data"].startswith("val split of") and result["n"] == folder_run.card.data["val_images"]
    assert set(result["per_class_accuracy"]) == {"blue sky", "grün", "red"}
    assert main(["info", run_dir]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["classes"] == ["blue sky", "grün", "red"] and info["input_size"] == [3, 32, 32]


def test_cli_train_on_a_folder(colour_folder, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--data", str(colour_folder), "--recipe", "keras_cnn", "--epochs", "1", "--out", str(out),
                 "--image-size", "64", "--init", "scratch", "--class-weights", "--quiet"])  # fmt: skip
    assert code == 0 and "accuracy" in capsys.readouterr().out
    clf = cifar_cnn.load(out)
    assert clf.input_size == 64 and clf.card.recipe["class_weights"] is True
    assert clf.predict(str(colour_folder / "red" / "0.png")).label in clf.classes
    assert main(["train", "--data", str(colour_folder), "--out", str(out), "--quiet"]) == 2  # run exists
    assert "--resume" in capsys.readouterr().err


def test_schedule_fits_the_data():
    fast = get_recipe("fast")
    small, notes = fit_to_data(fast, 300, tuned=False, finetune=False, fixed=set())
    assert small.batch_size <= 300 // 6 and small.epochs > fast.epochs and "300 training images" in notes[0]
    big, _ = fit_to_data(fast, 200_000, tuned=False, finetune=False, fixed=set())
    assert big.batch_size == fast.batch_size and big.epochs < fast.epochs
    assert fit_to_data(fast, 300, tuned=True, finetune=False, fixed=set()) == (fast, [])  # CIFAR-10: as tuned
    chosen, _ = fit_to_data(fast, 300, tuned=False, finetune=False, fixed={"epochs", "batch_size"})
    assert (chosen.epochs, chosen.batch_size) == (fast.epochs, fast.batch_size)
    tuned, _ = fit_to_data(fast, 300, tuned=False, finetune=True, fixed=set())
    assert tuned.epochs < small.epochs


def test_transfer_loads_everything_but_the_head():
    model = cifar_cnn.create_model("fast", num_classes=3, input_size=64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    message = load_matching(model, "pretrained:fast", ["a", "b", "c"])
    bundled = cifar_cnn.load("fast").model.state_dict()
    after = model.state_dict()
    assert head_names(model) == {"head.weight"} and "head re-initialized" in message
    assert torch.equal(after["head.weight"], before["head.weight"])
    assert all(torch.equal(after[k], bundled[k].to(after[k].dtype)) for k in after if k != "head.weight")
    same = cifar_cnn.create_model("fast")
    load_matching(same, "pretrained:fast", list(cifar_cnn.CLASS_NAMES))  # same classes: head kept too
    assert torch.equal(same.state_dict()["head.weight"], bundled["head.weight"])


def test_init_choices_are_checked(colour_folder, tmp_path):
    with pytest.raises(cifar_cnn.CheckpointError, match="no bundled pretrained weights"):
        cifar_cnn.train("keras_cnn", data=str(colour_folder), init="pretrained", epochs=1, progress=False)
    with pytest.raises(cifar_cnn.CheckpointError, match="no such model file"):
        cifar_cnn.train("fast", data=str(colour_folder), init=str(tmp_path / "nope"), epochs=1, progress=False)


class TinyNet(nn.Module):
    """A user's own module, defined in a notebook."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(1), nn.Flatten())  # fmt: skip
        self.classify = nn.Linear(8, classes)

    def forward(self, x):
        return self.classify(self.features(x))


def test_user_module_trains_and_predicts_from_the_cli_without_its_code(colour_folder, tmp_path, capsys):
    result = cifar_cnn.train(model=TinyNet(), data=str(colour_folder), out_dir=tmp_path, epochs=3, progress=False)
    assert result.card.model == "custom" and result.card.recipe["optimizer"] == "adam"
    clf = cifar_cnn.load(tmp_path)  # no TinyNet needed: the file holds a torch.export program
    x = clf.load_image(str(colour_folder / "red" / "1.png"))[None]
    expected = torch.softmax(result.model.eval()(clf.preprocess(x)) / clf.temperature, 1).detach().numpy()
    assert np.allclose(clf.predict_proba(x, tta=0, bf16=False), expected, atol=1e-5)
    assert main(["predict", str(tmp_path), str(colour_folder / "red" / "1.png"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in ("blue sky", "grün", "red")
    with pytest.raises(ValueError, match="Adam recipe"):
        cifar_cnn.train("fast", model=TinyNet(), data=str(colour_folder), epochs=1, progress=False)


def test_greyscale_folder_trains_from_scratch_with_sane_eval_statistics(tmp_path):
    """Grey images leave whitened channels constant; airbench's BatchNorm eps of 1e-12 then made
    eval-mode activations explode (validation loss in the hundreds). Folder models use 1e-5."""
    from PIL import Image

    from cifar_cnn.demo import make_shapes

    root = make_shapes(tmp_path / "grey", per_class=15, size=32)
    for f in root.rglob("*.png"):
        Image.open(f).convert("L").save(f)
    result = cifar_cnn.train("fast", data=str(root), init="scratch", epochs=4, batch_size=16, progress=False)
    assert result.card.model_kwargs == {"bn_eps": 1e-5}
    assert all(h["val_loss"] < 5 for h in result.history), [h["val_loss"] for h in result.history]


class BranchyNet(TinyNet):
    """Python control flow on the data: torch.export cannot capture it."""

    def forward(self, x):
        if float(x.mean()) > 100:
            x = x * 0
        return super().forward(x)


def test_module_that_cannot_be_exported_keeps_its_weights(colour_folder, tmp_path, capsys):
    result = cifar_cnn.train(model=BranchyNet(), data=str(colour_folder), out_dir=tmp_path, epochs=1)
    assert "Saved the weights and card only" in capsys.readouterr().out
    assert main(["predict", str(tmp_path), str(colour_folder / "red" / "1.png")]) == 2
    assert "cifar_cnn.load_weights" in capsys.readouterr().err
    clf = cifar_cnn.load_weights(tmp_path / "model.safetensors", BranchyNet())
    x = clf.load_image(str(colour_folder / "red" / "1.png"))[None]
    expected = result.model.eval()(clf.preprocess(x)).argmax(1).item()
    assert clf.classes[expected] == clf.predict(x[0]).label


def test_auto_init_follows_the_recipe_on_cifar10_and_the_folder_rule_elsewhere(colour_folder):
    """`robust` fine-tunes the bundled `fast` weights on CIFAR-10 (its `init`), `fast` trains from
    scratch there; on a small folder both fine-tune, whatever the recipe says."""
    from cifar_cnn.datasets import from_arrays, image_folder
    from cifar_cnn.transfer import resolve_init

    rng = np.random.default_rng(0)
    arrays = ((rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, (200, 1))),
              (rng.integers(0, 256, (50, 32, 32, 3), dtype=np.uint8), rng.integers(0, 10, (50, 1))))  # fmt: skip
    cifar_like, folder = from_arrays(arrays), image_folder(colour_folder)
    quiet = lambda *a, **k: None  # noqa: E731
    assert get_recipe("robust").init == "pretrained" and get_recipe("fast").init == "scratch"
    assert resolve_init("auto", "fast", cifar_like, quiet, get_recipe("robust").init) == "pretrained:fast"
    assert resolve_init("auto", "fast", cifar_like, quiet, get_recipe("fast").init) == "scratch"
    assert resolve_init("scratch", "fast", cifar_like, quiet, "pretrained") == "scratch"  # the user's word wins
    for recipe in ("fast", "robust"):
        assert resolve_init("auto", "fast", folder, quiet, get_recipe(recipe).init) == "pretrained:fast"

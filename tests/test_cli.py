import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import cifar_cnn
from cifar_cnn.cli import main


def test_predict_good_and_bad_files(model_file, tmp_path, capsys):
    good = tmp_path / "photo.jpg"
    Image.new("RGB", (640, 480), (30, 120, 200)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    code = main(["predict", str(model_file), str(good), str(bad), "--json", "-k", "3"])
    out, err = capsys.readouterr()
    assert code == 1  # one file failed
    lines = [json.loads(line) for line in out.splitlines()]
    assert lines[0]["filename"] == str(good) and len(lines[0]["predictions"]) == 3
    assert 0 < sum(p["score"] for p in lines[0]["predictions"]) <= 1 + 1e-6
    assert lines[0]["predictions"][0]["score"] >= lines[0]["predictions"][1]["score"]
    assert "error" in lines[1] and "bad.png" in lines[1]["error"]
    assert err.count("\n") == 1 and "not an image" in err


def test_predict_text_output(model_file, tmp_path, capsys):
    good = tmp_path / "a.png"
    Image.new("RGBA", (50, 70), (200, 10, 10, 128)).save(good)
    assert main(["predict", "--model", str(model_file), str(good)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{good}: ") and "top-5" in out


def test_missing_model_is_one_line_error(tmp_path, capsys):
    img = tmp_path / "a.png"
    Image.new("RGB", (32, 32)).save(img)
    assert main(["predict", "--model", str(tmp_path / "nope.safetensors"), str(img)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: model file not found") and err.count("\n") == 1


def test_train_refuses_to_overwrite_a_run(model_file, capsys):
    assert main(["train", "--recipe", "keras_cnn", "--out", str(model_file.parent)]) == 2
    assert "--resume" in capsys.readouterr().err


def test_unknown_recipe_is_refused_before_any_data_is_read(capsys, tmp_path, monkeypatch):
    import cifar_cnn.data

    monkeypatch.setattr(cifar_cnn.data, "load_cifar10", lambda *a, **k: pytest.fail("data read before the check"))
    assert main(["train", "--recipe", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown recipe 'nope'" in capsys.readouterr().err


def test_info_and_models(model_file, capsys):
    assert main(["info", str(model_file)]) == 0
    assert json.loads(capsys.readouterr().out)["model"] == "keras_cnn"
    assert main(["models"]) == 0
    assert "keras_cnn" in capsys.readouterr().out


def test_console_script_runs():
    done = subprocess.run([sys.executable, "-m", "cifar_cnn.cli", "--version"], capture_output=True, text=True)
    assert done.returncode == 0 and "cifar-cnn" in done.stdout


@pytest.mark.slow
def test_evaluate_on_real_test_set(model_file, real_data, capsys):
    assert main(["evaluate", str(model_file), "--test-subset", "500", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 500 and len(result["per_class_accuracy"]) == 10
    assert np.array(result["confusion_matrix"]).sum() == 500


@pytest.mark.parametrize("option", [["--epochs", "0"], ["--batch-size", "-5"], ["--lr", "-1"]])
def test_bad_training_options(option, tmp_path, capsys, tiny_archive):
    archive, _ = tiny_archive
    code = main(["train", "--recipe", "keras_cnn", "--out", str(tmp_path / "o"), "--data", str(archive), *option])
    assert code == 2 and "must be positive" in capsys.readouterr().err


def test_unwritable_output(tmp_path, capsys, tiny_archive):
    archive, _ = tiny_archive
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code = main(
        ["train", "--recipe", "keras_cnn", "--epochs", "1", "--out", str(blocker / "run"), "--data", str(archive)]
    )
    assert code == 2 and "error:" in capsys.readouterr().err


def test_drop_easy_option(tmp_path, capsys, tiny_archive):
    archive, _ = tiny_archive
    out = tmp_path / "run"
    code = main(["train", "--recipe", "fast", "--epochs", "3", "--batch-size", "8", "--drop-easy", "0.5",
                 "--out", str(out), "--data", str(archive), "--quiet", "--no-tensorboard"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    card = cifar_cnn.load(out).card
    assert card.recipe["drop_easy"] == 0.5 and card.recipe["drop_easy_from"] == 2
    code = main(["train", "--recipe", "fast", "--drop-easy", "1.5", "--out", str(tmp_path / "bad"),
                 "--data", str(archive), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "drop_easy must be in [0, 1)" in err and "Traceback" not in err


def test_progressive_resize_option(tmp_path, capsys, tiny_archive):
    archive, _ = tiny_archive
    out = tmp_path / "run"
    code = main(["train", "--recipe", "fast", "--epochs", "2", "--batch-size", "16", "--progressive-resize", "0.5,1",
                 "--out", str(out), "--data", str(archive), "--quiet", "--no-tensorboard"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert tuple(cifar_cnn.load(out).card.recipe["progressive_resize"]) == (0.5, 1.0)
    # A dense head fixes its input size: refused before training, with the way out.
    code = main(["train", "--recipe", "keras_cnn", "--progressive-resize", "0.5,1", "--out", str(tmp_path / "k"),
                 "--data", str(archive), "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "16 px" in err and "--progressive-resize off" in err and "Traceback" not in err
    assert not (tmp_path / "k" / "model.safetensors").exists()
    with pytest.raises(SystemExit) as bad:
        main(["train", "--progressive-resize", "0.5,2", "--out", str(tmp_path / "b")])
    assert bad.value.code == 2 and "fractions of the image side" in capsys.readouterr().err

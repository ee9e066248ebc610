"""TensorBoard logs of training runs, read back with TensorBoard's own EventAccumulator."""

import importlib
import io
import math
import sys
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from cifar_cnn.cli import main
from cifar_cnn.distributed import Context
from cifar_cnn.runlog import EVENT_FILES, RunLog, flat_hparams
from cifar_cnn.train import train

train_module = importlib.import_module("cifar_cnn.train")  # the package exports a function of the same name


def read_log(folder) -> EventAccumulator:
    acc = EventAccumulator(str(folder), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def steps(acc: EventAccumulator, tag: str) -> list[int]:
    return [e.step for e in acc.Scalars(tag)]


def session_hparams(acc: EventAccumulator) -> dict:
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    return {k: v.string_value if v.HasField("string_value") else v.number_value for k, v in values.items()}


def test_cli_train_on_a_folder_logs_epochs_images_and_hparams(own_folder, tmp_path, capsys):
    out = tmp_path / "runs" / "photos"
    args = ["train", "--data", str(own_folder), "--out", str(out), "--recipe", "keras_cnn", "--epochs", "2",
            "--init", "scratch", "--image-size", "40"]  # fmt: skip
    assert main(args) == 0
    assert f"tensorboard --logdir {out.parent}" in capsys.readouterr().out
    assert len(list(out.glob(EVENT_FILES))) == 1  # in the run folder itself: one run per folder
    acc = read_log(out)
    for tag in ("loss/train", "accuracy/train", "loss/val", "accuracy/val", "learning_rate",
                "speed/images_per_second"):  # fmt: skip
        assert steps(acc, tag) == [1, 2], tag
        values = [e.value for e in acc.Scalars(tag)]
        assert all(math.isfinite(v) for v in values), tag
        if tag.startswith("accuracy/"):
            assert all(0 <= v <= 1 for v in values), tag
        elif tag in ("learning_rate", "speed/images_per_second"):
            assert all(v > 0 for v in values), tag
    for tag, min_size in (("final/confusion_matrix", 300), ("final/sample_predictions", 100)):  # a row of 7
        [event] = acc.Images(tag)  # once, at the last epoch
        image = np.asarray(Image.open(io.BytesIO(event.encoded_image_string)))
        assert event.step == 2 and image.shape == (event.height, event.width, 3) and min(image.shape[:2]) > min_size
    hp = session_hparams(acc)  # the folder has no test/ split: its validation split is the final one
    assert hp["recipe"] == "keras_cnn" and hp["epochs"] == 2 and hp["classes"] == 3 and hp["input_size"] == 40
    assert hp["init"] == "scratch" and hp["data"] == str(own_folder)
    [final] = acc.Scalars("hparam/val_accuracy")
    assert final.step == 2 and 0 <= final.value <= 1


def test_resume_rewrites_the_log_without_duplicate_epochs(tiny_data, tmp_path, monkeypatch):
    original = train_module._save_checkpoint

    def die_before_saving_epoch_2(run):
        if run.state["epoch"] == 2:
            raise KeyboardInterrupt  # epoch 2 is in the log but not in the checkpoint
        original(run)

    monkeypatch.setattr(train_module, "_save_checkpoint", die_before_saving_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train("keras_cnn", data=tiny_data, epochs=3, out_dir=tmp_path, progress=False)
    assert steps(read_log(tmp_path), "loss/train") == [1, 2]
    monkeypatch.setattr(train_module, "_save_checkpoint", original)
    result = train("keras_cnn", data=tiny_data, epochs=3, out_dir=tmp_path, resume=True, progress=False)

    acc = read_log(tmp_path)
    for tag in ("loss/train", "accuracy/test", "learning_rate"):  # CIFAR-10 data: the test split is monitored
        assert steps(acc, tag) == [1, 2, 3], tag
    assert [e.value for e in acc.Scalars("loss/train")] == pytest.approx([h["train_loss"] for h in result.history])
    assert [e.step for e in acc.Images("final/sample_predictions")] == [3]
    assert session_hparams(acc)["epochs"] == 3


def test_a_failing_log_warns_once_and_training_goes_on(tiny_data, tmp_path, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(SummaryWriter, "add_scalar", disk_full)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = train("keras_cnn", data=tiny_data, epochs=2, out_dir=tmp_path, progress=False)
    assert result.model_path.is_file()
    messages = [str(w.message) for w in caught if "TensorBoard" in str(w.message)]
    assert len(messages) == 1 and "No space left" in messages[0]


def test_without_tensorboard_installed_a_hint_and_no_log(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with pytest.warns(RuntimeWarning, match="pip install"):
        log = RunLog(tmp_path)
    assert not log.active
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # later calls are silent no-ops
        log.epoch({"epoch": 1, "train_loss": 1.0})
        log.close()
    assert not list(tmp_path.glob(EVENT_FILES))


def test_no_tensorboard_flag_and_other_ranks_write_nothing(own_folder, tmp_path):
    out = tmp_path / "run"
    args = ["train", "--data", str(own_folder), "--out", str(out), "--recipe", "keras_cnn", "--epochs", "1",
            "--init", "scratch", "--no-tensorboard", "--quiet"]  # fmt: skip
    assert main(args) == 0
    assert (out / "model.safetensors").is_file() and not list(out.glob(EVENT_FILES))
    worker = SimpleNamespace(out_dir=out, ctx=Context(rank=1, world_size=2))  # under torchrun: rank 0 only
    assert train_module._open_runlog(worker) is None


def test_flat_hparams():
    values = {"lr": 0.1, "flip": True, "name": "fast", "nested": {"a": 1}, "none": None, "size": (32, 32)}
    assert flat_hparams(values) == {"lr": 0.1, "flip": 1, "name": "fast", "nested.a": 1, "size": "(32, 32)"}

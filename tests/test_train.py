import importlib
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from cifar_cnn.checkpoint import load_tensors
from cifar_cnn.errors import CheckpointError
from cifar_cnn.predict import load
from cifar_cnn.train import CHECKPOINT_NAME, train

train_module = importlib.import_module("cifar_cnn.train")  # the package exports a function of the same name


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_epoch_batches_apply_the_recipes_augmentation():
    from cifar_cnn.recipes import get_recipe

    images = torch.rand(400, 3, 32, 32) + 1  # no zeros, so cutout squares are the only ones
    labels = torch.arange(400) % 10
    recipe = get_recipe("large").override(batch_size=100)
    batches = train_module.EpochBatches(images, labels, recipe, seed=0, device=torch.device("cpu"))
    seen = list(batches.epoch(0, torch.Generator().manual_seed(0)))
    assert len(seen) == 4 and all(x.shape == (100, 3, 32, 32) for x, _ in seen)
    zeros = torch.stack([(x[:, 0] == 0).sum((1, 2)) for x, _ in seen])
    assert (zeros >= 144).all()  # a 12x12 cutout in every image (reflect padding adds no zeros)
    plain = train_module.EpochBatches(images, labels, recipe.override(cutout=0), seed=0)
    assert all((x != 0).all() for x, _ in plain.epoch(0, torch.Generator().manual_seed(0)))


@pytest.mark.parametrize("recipe", ["fast", "keras_cnn", "robust"])  # robust: its noise and blur draws are seeded too
def test_same_seed_same_result(recipe, tiny_data):
    a = train(recipe, data=tiny_data, epochs=2, progress=False, seed=3)
    b = train(recipe, data=tiny_data, epochs=2, progress=False, seed=3)
    c = train(recipe, data=tiny_data, epochs=2, progress=False, seed=4)
    wa, wb, wc = weights(a.model), weights(b.model), weights(c.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert any(not torch.equal(wa[k], wc[k]) for k in wa if wa[k].is_floating_point())


def test_resume_after_interruption_equals_uninterrupted(tiny_data, tmp_path, monkeypatch):
    full = train("fast", data=tiny_data, epochs=3, out_dir=tmp_path / "full", progress=False)

    original = train_module._save_checkpoint

    def save_then_die(run):
        original(run)
        if run.state["epoch"] == 1:
            raise KeyboardInterrupt  # as if the process were stopped right after epoch 1

    monkeypatch.setattr(train_module, "_save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train("fast", data=tiny_data, epochs=3, out_dir=tmp_path / "cut", progress=False)
    monkeypatch.setattr(train_module, "_save_checkpoint", original)
    resumed = train("fast", data=tiny_data, epochs=3, out_dir=tmp_path / "cut", resume=True, progress=False)

    wf, wr = weights(full.model), weights(resumed.model)
    assert all(torch.equal(wf[k], wr[k]) for k in wf), "resumed run differs from the uninterrupted one"
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]


def test_resume_refuses_other_recipe(tiny_data, tmp_path):
    train("keras_cnn", data=tiny_data, epochs=1, out_dir=tmp_path, progress=False)
    with pytest.raises(CheckpointError, match="another recipe"):
        train("fast", data=tiny_data, epochs=1, out_dir=tmp_path, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train("fast", data=tiny_data, out_dir=tmp_path / "empty", resume=True, progress=False)


def test_saved_model_round_trip(tiny_data, tmp_path):
    result = train("keras_cnn", data=tiny_data, epochs=1, out_dir=tmp_path, progress=False)
    _tensors, meta = load_tensors(result.model_path)
    assert meta["model"] == "keras_cnn" and meta["classes"][3] == "cat"
    assert meta["recipe"]["name"] == "keras_cnn" and meta["mean"] and meta["std"]
    assert meta["versions"]["torch"] == torch.__version__ and "cpu" in meta["hardware"]
    clf = load(result.model_path)
    (_, _), (x_test, _) = tiny_data
    assert meta["temperature"] > 0 and 0 <= meta["uncertain_threshold"] <= 1 and meta["holdout_images"] == 6
    logits = train_module.predict_logits(result.model, clf.preprocess(x_test))
    expected = torch.softmax(logits / meta["temperature"], 1).numpy()  # calibrated probabilities
    assert abs(clf.predict_proba(x_test, bf16=False) - expected).max() < 1e-5


def test_corrupt_model_file_is_a_clear_error(tiny_data, tmp_path):
    result = train("keras_cnn", data=tiny_data, epochs=1, out_dir=tmp_path, progress=False)
    data = result.model_path.read_bytes()
    result.model_path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load(result.model_path)
    other = tmp_path / "other.safetensors"
    other.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError):
        load(other)


def test_full_disk_keeps_previous_checkpoint(tiny_data, tmp_path, monkeypatch):
    import cifar_cnn.checkpoint as ckpt

    train("keras_cnn", data=tiny_data, epochs=1, out_dir=tmp_path, progress=False)
    before = (tmp_path / CHECKPOINT_NAME).read_bytes()

    def no_space(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt.os, "fsync", no_space)
    with pytest.raises(CheckpointError, match="No space left"):
        train("keras_cnn", data=tiny_data, epochs=2, out_dir=tmp_path, progress=False)
    assert (tmp_path / CHECKPOINT_NAME).read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_kill_9_then_resume(tmp_path, real_data):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "cifar_cnn.cli", "train", "--recipe", "keras_cnn", "--epochs", "4",
           "--train-subset", "2000", "--test-subset", "500", "--out", str(out), "--quiet"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (out / CHECKPOINT_NAME).exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, meta = load_tensors(out / CHECKPOINT_NAME)
    assert 1 <= meta["epoch"] < 4
    done = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    _, meta = load_tensors(out / "model.safetensors")
    assert [h["epoch"] for h in meta["history"]] == [1, 2, 3, 4]


@pytest.mark.slow
def test_short_training_on_real_data_learns(real_data):
    """fast recipe, 3 short epochs (12 steps) on 10,000 real images: far above the 10% of chance."""
    result = train("fast", data=real_data, epochs=3, train_subset=10000, test_subset=2000, progress=False)
    assert result.metrics.accuracy > 0.45, result.metrics.accuracy


@pytest.mark.slow
def test_keras_cnn_learns_on_real_data(real_data):
    result = train("keras_cnn", data=real_data, epochs=2, train_subset=5000, test_subset=1000, progress=False)
    assert result.metrics.accuracy > 0.3, result.metrics.accuracy


def test_compile_without_a_compiler_is_a_clear_error(tiny_data, monkeypatch):
    monkeypatch.setattr(train_module.shutil, "which", lambda name: None)
    with pytest.raises(ValueError, match="C\\+\\+ compiler"):
        train("fast", data=tiny_data, epochs=1, progress=False, device="cpu", compile=True)


def test_outlier_exposure_pulls_mosaics_towards_a_flat_answer():
    """The outliers' loss is cross-entropy to the uniform distribution: trained with it, the
    network is less sure about patch mosaics than trained without. Two classes the mosaics break
    up: bright top and dark bottom, or the reverse."""
    import numpy as np

    from cifar_cnn.preprocess import batch_patch_shuffle, to_tensor

    rng = np.random.default_rng(0)
    labels = np.arange(128) % 2
    x = rng.integers(0, 60, (128, 32, 32, 3)).astype(np.uint8)
    for i, label in enumerate(labels):
        x[i, :16] += 180 if label == 0 else 0
        x[i, 16:] += 180 if label == 1 else 0
    data = ((x[:96], labels[:96, None]), (x[96:], labels[96:, None]))
    mosaics = batch_patch_shuffle(to_tensor(x[96:]), generator=torch.Generator().manual_seed(9))

    def mosaic_confidence(result):
        with torch.no_grad():
            return torch.softmax(result.model.eval()(mosaics), 1).max(1).values.mean().item()

    kwargs = dict(data=data, epochs=8, batch_size=32, progress=False, seed=0)
    plain, exposed = train("keras_cnn", **kwargs), train("keras_cnn", outlier_exposure=1.0, **kwargs)
    assert plain.metrics.accuracy == exposed.metrics.accuracy == 1.0  # both learn the classes
    assert exposed.card.recipe["outlier_exposure"] == 1.0
    assert mosaic_confidence(exposed) < mosaic_confidence(plain) - 0.1
    with pytest.raises(ValueError, match="outlier_exposure"):
        train("keras_cnn", data=data, epochs=1, progress=False, outlier_exposure=2.0)


def test_progressive_resizing_trains_small_then_full_size(tiny_data, tmp_path, monkeypatch):
    sizes = []
    original = train_module.train_step

    def spy(run, inputs, labels):
        sizes.append(inputs.shape[-1])
        return original(run, inputs, labels)

    monkeypatch.setattr(train_module, "train_step", spy)
    result = train("fast", data=tiny_data, epochs=4, batch_size=16, progressive_resize=(0.5, 0.75, 1.0, 1.0),
                   out_dir=tmp_path, progress=False)  # fmt: skip
    per_epoch = len(sizes) // 4
    assert sizes == [16] * per_epoch + [24] * per_epoch + [32] * 2 * per_epoch
    assert result.card.recipe["progressive_resize"] == (0.5, 0.75, 1.0, 1.0)
    assert load(result.model_path).predict_proba(tiny_data[1][0][:4]).shape == (4, 10)  # full size at test
    # The schedule survives the JSON of a checkpoint: resuming continues it (nothing left to run here).
    resumed = train("fast", data=tiny_data, epochs=4, batch_size=16, progressive_resize=(0.5, 0.75, 1.0, 1.0),
                    out_dir=tmp_path, resume=True, progress=False)  # fmt: skip
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]


def test_frozen_whitening_bias_skips_its_gradient_with_the_same_weights(tiny_data, monkeypatch):
    """After whiten_bias_epochs the stem's bias is detached (less backward work): a pure speed-up."""
    kwargs = dict(data=tiny_data, epochs=3, batch_size=16, whiten_bias_epochs=1, progress=False, seed=1)
    fast = train("fast", **kwargs)
    monkeypatch.setattr(train_module, "_forward_options", lambda run: {})
    full = train("fast", **kwargs)
    wf, wu = weights(fast.model), weights(full.model)
    assert all(torch.equal(wf[k], wu[k]) for k in wf)


def test_hard_example_focus_leaves_out_the_images_with_the_lowest_loss():
    from cifar_cnn.distributed import Context
    from cifar_cnn.recipes import get_recipe

    images, labels = torch.rand(400, 3, 32, 32), torch.arange(400) % 10
    recipe = get_recipe("fast").override(batch_size=50, drop_easy=0.5, drop_easy_from=1)
    batches = train_module.EpochBatches(images, labels, recipe, seed=0, device=torch.device("cpu"))
    assert [batches.steps(e) for e in range(3)] == [8, 4, 4]
    assert batches.schedule() == (sum(recipe.epoch_steps(400)), 8) == (8 + 7 * 4, 8)  # the lr decays over these
    assert recipe.override(epochs=2.5).epoch_steps(400) == [8, 4, 2]
    generator = torch.Generator().manual_seed(0)

    def run_epoch(epoch):
        seen = []
        for _x, _y in batches.epoch(epoch, generator, 3):
            seen.append(batches.last_idx)
            batches.record_losses(batches.last_idx.float())  # a loss that grows with the index
        batches.end_epoch(Context())
        return torch.cat(seen)

    assert sorted(run_epoch(0).tolist()) == list(range(400))  # every image while the focus is off
    assert torch.equal(batches.losses, torch.arange(400).float())
    second = run_epoch(1)
    assert len(second) == 200 and len(set(second.tolist())) == 200
    hard = 200 - int(recipe.drop_easy_random * 400)  # the rest drawn at random from the easy ones
    assert set(range(400 - hard, 400)) <= set(second.tolist())
    assert len(set(second.tolist()) & set(range(400 - hard))) == 200 - hard
    # With no random share the epoch is exactly the hardest half; with the whole kept share, a
    # random half (about half of it from each end of the ranking).
    for share, check in [(0.0, lambda kept: kept == set(range(200, 400))),
                         (0.5, lambda kept: 70 < len(kept & set(range(200))) < 130)]:  # fmt: skip
        other = train_module.EpochBatches(images, labels, recipe.override(drop_easy_random=share), seed=0)
        other.losses = torch.arange(400).float()
        order = other.order(1, torch.Generator().manual_seed(1))
        assert len(order) == 200 and check(set(order.tolist())), share
    # Without the focus nothing changes: every image each epoch, in the order seeds always gave.
    plain = train_module.EpochBatches(images, labels, recipe.override(drop_easy=0.0), seed=0)
    assert plain.losses is None and plain.steps(2) == 8 and plain.schedule() == (64, 8)
    assert recipe.override(drop_easy=0.0, epochs=2.5).epoch_steps(400) == [8, 8, 4]
    for bad in (dict(drop_easy=1.0), dict(drop_easy_random=1.5)):
        with pytest.raises(ValueError, match="drop_easy"):
            recipe.override(**bad)


def test_hard_example_focus_runs_fewer_steps_decays_to_zero_and_resumes(tiny_data, tmp_path, monkeypatch):
    kwargs = dict(data=tiny_data, epochs=3, batch_size=8, drop_easy=0.5, drop_easy_from=1, progress=False)
    steps = []
    original = train_module.train_step

    def spy(run, inputs, labels):
        steps.append(len(labels))
        return original(run, inputs, labels)

    monkeypatch.setattr(train_module, "train_step", spy)
    full = train("fast", out_dir=tmp_path / "full", **kwargs)
    per_epoch = (64 - 6) // 8  # tiny_data: 64 images less a tenth held out
    assert len(steps) == per_epoch + 2 * (per_epoch // 2)
    # The linear decay spans the steps actually taken: the last one runs at 1/steps of the peak.
    assert full.history[-1]["lr"] == pytest.approx(full.card.recipe["lr"] / len(steps))
    assert load_tensors(tmp_path / "full" / CHECKPOINT_NAME)[0]["data.losses"].isfinite().all()

    save = train_module._save_checkpoint
    monkeypatch.setattr(train_module, "_save_checkpoint", lambda run: (save(run), _die_after(run, 2)))
    with pytest.raises(KeyboardInterrupt):
        train("fast", out_dir=tmp_path / "cut", **kwargs)
    monkeypatch.setattr(train_module, "_save_checkpoint", save)
    resumed = train("fast", out_dir=tmp_path / "cut", resume=True, **kwargs)
    wf, wr = weights(full.model), weights(resumed.model)
    assert all(torch.equal(wf[k], wr[k]) for k in wf), "the resumed run chose other images than the full one"


def _die_after(run, epoch):
    if run.state["epoch"] == epoch:
        raise KeyboardInterrupt  # as if the process were stopped right after this epoch's checkpoint


def test_progressive_resize_schedule_follows_the_runs_length():
    from cifar_cnn.recipes import Recipe, get_recipe

    recipe = get_recipe("fast").override(progressive_resize=(0.625, 0.75, 0.875, 1.0))
    assert [recipe.train_size(e, 8, 32) for e in range(8)] == [20, 20, 24, 24, 28, 28, 32, 32]
    assert [recipe.train_size(e, 3, 32) for e in range(3)] == [20, 24, 28]  # a folder's fitted, shorter run
    assert [recipe.train_size(e, 4, 64) for e in range(4)] == [40, 48, 56, 64]  # fractions of the data's size
    assert Recipe.from_dict({**recipe.to_dict(), "progressive_resize": [0.5, 1.0]}).progressive_resize == (0.5, 1.0)
    with pytest.raises(ValueError, match="progressive_resize"):
        recipe.override(progressive_resize=(0.0, 1.0))

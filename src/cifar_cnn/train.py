"""Training: whole dataset as tensors in memory, batched augmentation, bf16 autocast,
channels_last, a checkpoint after every epoch, exact resume.

    result = train("fast", out_dir="runs/fast", seed=0)                 # CIFAR-10
    result = train("fast", data="photos/", out_dir="runs/photos")       # any labelled folder
    result = train(model=my_module, data="photos/", recipe="keras_cnn") # your own nn.Module

`train` is three named steps over a `Run`: `prepare` (data, model, transfer, schedule,
optimizers, resume), `fit` (the epochs) and `finalize` (test metrics, calibration on the
validation split, the `ModelCard`, the model file). With an output folder, each run also writes
TensorBoard event files into it (`runlog.py`).
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cifar_cnn import __version__, distributed
from cifar_cnn.calibrate import calibrate
from cifar_cnn.card import CUSTOM_MODEL, ModelCard
from cifar_cnn.checkpoint import load_optimizer_tensors, load_tensors, optimizer_tensors, save_tensors, split_prefix
from cifar_cnn.datasets import ImageDataset, cifar10, from_arrays, image_folder
from cifar_cnn.errors import CheckpointError, CifarCnnError
from cifar_cnn.evaluate import Metrics, compute_metrics, predict_logits
from cifar_cnn.hardware import choose_device, describe, keep_freed_memory, summary_line, use_bf16
from cifar_cnn.models import accepts, create_model, get_model_config, list_models
from cifar_cnn.novelty import STAGE_LAYERS, fit_on_training_images, logits_and_features
from cifar_cnn.optim import Optimizers, make_optimizers
from cifar_cnn.preprocess import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    batch_blur,
    batch_color_jitter,
    batch_cutout,
    batch_flip,
    batch_noise,
    batch_patch_shuffle,
    batch_resize,
    batch_translate,
    reflect_pad,
    to_tensor,
)
from cifar_cnn.recipes import Recipe, fit_to_data, get_recipe
from cifar_cnn.runlog import RunLog, tensorboard_command
from cifar_cnn.transfer import load_matching, resolve_init

CHECKPOINT_NAME = "checkpoint.safetensors"
MODEL_NAME = "model.safetensors"
OUTLIER_WEIGHT = 0.5  # outlier exposure's loss weight (Hendrycks et al. 2019 use 0.5 on CIFAR)


@dataclass
class TrainResult:
    model: nn.Module
    metrics: Metrics
    card: ModelCard
    model_path: Path | None
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0  # all epochs, including those before a resume
    total_seconds: float = 0.0  # this call: data to tensors + training + final evaluation

    @property
    def metadata(self) -> dict:
        return self.card.to_dict()


class EpochBatches:
    """Batches of one epoch from in-memory tensors, augmented as in airbench:
    - flip, derandomized: each image gets a random fixed flip once, then the whole set is
      mirrored every other epoch, so every image is seen both ways every two epochs;
    - translate: a random crop from reflect-padded images, drawn anew each epoch;
    - cutout: a random square of each batch's images set to zero (the mean);
    - color jitter, noise, blur (the `robust` recipe): per batch, on pixel values (preprocess.py);
    - progressive resizing: each batch downscaled to the epoch's `recipe.train_size`, last;
    - hard-example focus (`recipe.drop_easy`): later epochs leave out the images with the lowest
      loss when last seen (`record_losses` keeps the table, from each step's logits).
    The tensors live on the training device (on a GPU the whole set fits: no host copies per
    batch); random draws come from a CPU generator, so a seed gives the same batches anywhere.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, recipe: Recipe, seed: int,
                 rank: int = 0, world_size: int = 1, device: torch.device | None = None,
                 mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD):  # fmt: skip
        if device is not None:
            images, labels = images.to(device), labels.to(device)
        self.labels = labels
        self.rank, self.world_size = rank, world_size  # under torchrun: this process's slice of each batch
        self.batch_size = min(recipe.batch_size, len(images))
        self.translate = recipe.translate
        self.cutout = recipe.cutout
        self.recipe, self.mean, self.std = recipe, mean, std
        self.size = images.shape[-1]
        if recipe.flip:
            images = batch_flip(images, torch.Generator().manual_seed(seed + 1))
        self.flip = recipe.flip
        self.images = reflect_pad(images, self.translate)
        # Hard-example focus: each image's loss as last seen (inf: not yet seen, so first in
        # line), and this epoch's fresh values, merged across processes at the epoch's end.
        self.losses = torch.full((len(labels),), math.inf, device=labels.device) if recipe.drop_easy else None
        self.fresh = torch.zeros((2, len(labels)), device=labels.device) if recipe.drop_easy else None
        self.last_idx: torch.Tensor | None = None  # this process's images in the batch last yielded

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size  # drop the last partial batch

    def steps(self, epoch: int) -> int:
        """Batches in 0-based `epoch`: fewer once the hard-example focus leaves images out."""
        return self.recipe.steps_in_epoch(epoch, len(self.labels))

    def schedule(self) -> tuple[int, int]:
        """(steps, epochs) of the recipe's run, its last epoch cut short when `epochs` is fractional."""
        plan = self.recipe.epoch_steps(len(self.labels))
        return sum(plan), len(plan)

    def order(self, epoch: int, generator: torch.Generator) -> torch.Tensor:
        """This epoch's image indices, shuffled: all of them, or the hard ones and a random few."""
        n = len(self.labels)
        shuffle = torch.randperm(n, generator=generator)
        if self.losses is None or epoch < self.recipe.drop_easy_from:
            return shuffle
        keep = self.steps(epoch) * self.batch_size
        n_random = min(keep, int(self.recipe.drop_easy_random * n))
        # Ties (images not seen yet) broken by the shuffle: sort the shuffled losses, stably.
        ranked = shuffle[torch.sort(self.losses.cpu()[shuffle], descending=True, stable=True).indices]
        hard, rest = ranked[: keep - n_random], ranked[keep - n_random :]
        chosen = torch.cat([hard, rest[torch.randperm(len(rest), generator=generator)[:n_random]]])
        return chosen[torch.randperm(len(chosen), generator=generator)]

    def record_losses(self, losses: torch.Tensor) -> None:
        """The per-image losses of the batch last yielded (hard-example focus only)."""
        if self.fresh is not None and self.last_idx is not None:
            self.fresh[0, self.last_idx] = losses.detach().float()
            self.fresh[1, self.last_idx] = 1

    def end_epoch(self, ctx: distributed.Context) -> None:
        """Merge the epoch's fresh losses (from every process) into the table."""
        if self.fresh is None:
            return
        distributed.all_reduce_sum(self.fresh, ctx)
        seen = self.fresh[1] > 0
        self.losses[seen] = self.fresh[0, seen] / self.fresh[1, seen]
        self.fresh.zero_()

    def epoch(self, epoch: int, generator: torch.Generator, epochs: int = 1):
        """Yields the (images, labels) batches of 0-based `epoch` of a run of `epochs`."""
        size = self.recipe.train_size(epoch, epochs, self.size)
        images = self.images
        if self.translate:
            images = batch_translate(images, self.size, generator)
        if self.flip and epoch % 2 == 1:
            images = images.flip(-1)
        order = self.order(epoch, generator)
        for i in range(self.steps(epoch)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size][self.rank :: self.world_size]
            idx = idx.to(images.device)
            self.last_idx = idx
            batch = images[idx]
            if self.cutout:
                batch = batch_cutout(batch, self.cutout, generator)
            batch = self.photometric(batch, generator)
            yield batch_resize(batch, size), self.labels[idx]

    def photometric(self, batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        r = self.recipe
        if r.color_jitter:
            batch = batch_color_jitter(batch, r.color_jitter, self.mean, self.std, generator)
        if r.noise:
            batch = batch_noise(batch, r.noise, self.mean, self.std, generator)
        if r.blur:
            batch = batch_blur(batch, r.blur, generator)
        return batch


@dataclass
class Run:
    """Everything one training run holds; `prepare` builds it, `fit` and `finalize` use it."""

    recipe: Recipe
    data: ImageDataset
    model: nn.Module  # the plain module (weights, saving)
    net: nn.Module  # what runs forward/backward: the model, DDP-wrapped and/or compiled
    device: torch.device
    ctx: distributed.Context
    bf16: bool
    seed: int
    init: str
    batches: EpochBatches
    opts: Optimizers
    generator: torch.Generator
    total_steps: int
    inputs: dict[str, torch.Tensor]  # normalized (N, 3, S, S) tensors of the val and test splits
    class_weight: torch.Tensor | None
    checkpoint: Path | None
    out_dir: Path | None
    log: Callable[..., None]
    progress: bool
    custom: bool  # a user's module (saved as a torch.export program)
    model_kwargs: dict  # builder arguments the card must record to rebuild the model
    started: float
    state: dict = field(default_factory=lambda: {"epoch": 0, "step": 0, "history": [], "train_seconds": 0.0})
    first_epoch: int = 0
    runlog: RunLog | None = None  # TensorBoard events in out_dir (rank 0 only)
    on_epoch: Callable[[dict], None] | None = None  # told of each finished epoch; may raise to stop the run


def train(
    recipe: str | Recipe | None = None,
    *,
    data=None,
    model: nn.Module | None = None,
    init: str = "auto",
    out_dir: str | Path | None = None,
    seed: int = 0,
    resume: bool = False,
    device: str | None = None,
    image_size: int = 32,
    val_fraction: float = 0.2,
    class_weights: bool = False,
    train_subset: int | None = None,
    test_subset: int | None = None,
    progress: bool = True,
    compile: bool = False,
    tensorboard: bool = True,
    on_epoch: Callable[[dict], None] | None = None,
    **overrides,
) -> TrainResult:
    """Train a recipe on CIFAR-10 or on your own images, then evaluate and calibrate it.

    Args:
        recipe: a recipe name or `Recipe` (default "fast"; "keras_cnn" when `model` is given).
        data: None (CIFAR-10), the keras-style arrays `((x_train, y_train), (x_test, y_test))`,
            a labelled folder path, or an `ImageDataset`.
        model: your own `nn.Module` (logits for the data's classes) instead of the recipe's.
        init: "auto" (fine-tune the bundled CIFAR-10 weights on small folders; on CIFAR-10 the
            recipe's own `init`: scratch, but the `robust` recipe fine-tunes `fast`), "scratch",
            "pretrained", or a model file to start from; the head is re-initialized for new classes.
        out_dir: where the per-epoch checkpoint and the final `model.safetensors` go.
        resume: continue from `out_dir/checkpoint.safetensors`.
        image_size, val_fraction: for a folder (see `datasets.image_folder`).
        class_weights: weight the loss by inverse class frequency (imbalanced folders).
        train_subset, test_subset: use only the first N images (quick runs, tests).
        compile: run the training forward/backward through torch.compile (pays off only on long
            GPU runs; on CPU it needs a C++ compiler).
        tensorboard: write TensorBoard event files into `out_dir` (see `runlog.py`); a failure
            to write them warns once and never stops training.
        on_epoch: called after each epoch (and its checkpoint) with that epoch's stats plus
            `epochs`, the run's total: live progress for the studio; an exception it raises stops
            the run there (a cancel), the checkpoint keeping that epoch.
        overrides: recipe fields to change, e.g. epochs=2.

    Raises:
        DataError, CheckpointError, ValueError: with a message that says how to fix it.
    """
    run = prepare(recipe, data=data, model=model, init=init, out_dir=out_dir, seed=seed, resume=resume,
                  device=device, image_size=image_size, val_fraction=val_fraction, class_weights=class_weights,
                  train_subset=train_subset, test_subset=test_subset, progress=progress, compile=compile,
                  tensorboard=tensorboard, on_epoch=on_epoch, **overrides)  # fmt: skip
    try:
        with keep_freed_memory(run.device):  # a third of a CPU step was page faults (hardware.py)
            fit(run)
            return finalize(run)
    finally:
        if run.runlog:
            run.runlog.close()  # interrupted: the log keeps every finished epoch


def load_data(data, recipe: Recipe, *, image_size: int = 32, val_fraction: float = 0.2, seed: int = 0,
              train_subset=None, test_subset=None, progress: bool = True) -> ImageDataset:  # fmt: skip
    """Whatever `train(data=...)` accepts, as an `ImageDataset`."""
    if isinstance(data, ImageDataset):
        return data
    if isinstance(data, (str, Path)):
        ds = image_folder(data, image_size=image_size, val_fraction=val_fraction, seed=seed, progress=progress)
        if train_subset or test_subset:
            ds.train_x, ds.train_y = ds.train_x[:train_subset], ds.train_y[:train_subset]
            ds.test_x, ds.test_y = ds.test_x[:test_subset], ds.test_y[:test_subset]
        return ds
    if data is None:
        return cifar10(holdout=recipe.holdout, train_subset=train_subset, test_subset=test_subset, verbose=progress)
    return from_arrays(data, holdout=recipe.holdout, train_subset=train_subset, test_subset=test_subset)


def _check_takes_train_sizes(net: nn.Module, recipe: Recipe, size: int, dev: torch.device) -> None:
    """Progressive resizing feeds smaller images: refuse now a network whose dense head fixes its
    input size (keras_cnn), rather than after the data is read and an epoch is spent."""
    parts = len(recipe.progressive_resize)
    for side in sorted({recipe.train_size(part, parts, size) for part in range(parts)} - {size}):
        try:
            with torch.no_grad():
                net.eval()
                net(torch.zeros(2, 3, side, side, device=dev).contiguous(memory_format=torch.channels_last))
        except RuntimeError as e:
            raise ValueError(
                f"progressive resizing trains on {side} px images, which model {recipe.model!r} does not take "
                f"({str(e).splitlines()[0][:120]}): use a model that pools globally (fast, medium, large), "
                "or train without it (--progressive-resize off)"
            ) from None
        finally:
            net.train()


def prepare(recipe=None, *, data=None, model=None, init="auto", out_dir=None, seed=0, resume=False, device=None,
            image_size=32, val_fraction=0.2, class_weights=False, train_subset=None, test_subset=None,
            progress=True, compile=False, tensorboard=True, on_epoch=None, **overrides) -> Run:  # fmt: skip
    """Data, model, transfer, schedule, optimizers and (with `resume`) the saved state."""
    registered = getattr(model, "model_name", None) if model is not None else None
    custom = model is not None and registered not in list_models()  # else a registry model the user built
    default = get_model_config(registered).default_recipe if registered in list_models() else "keras_cnn"
    recipe = recipe or (default if model is not None else "fast")
    base = (get_recipe(recipe) if isinstance(recipe, str) else recipe).override(**overrides)  # validated first
    if class_weights:
        base = base.override(class_weights=True)
    if out_dir:
        Path(out_dir).mkdir(parents=True, exist_ok=True)  # fail now, not after the first epoch
    dev = distributed.device_for(choose_device(device))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN time and pick its kernels
    if compile and dev.type == "cpu" and not (shutil.which("c++") or shutil.which("g++")):
        raise ValueError("--compile on CPU needs a C++ compiler (e.g. apt-get install g++); train without it")
    ctx = distributed.init(dev)
    bf16 = use_bf16(dev)
    progress = progress and ctx.is_main
    log = print if progress else (lambda *a, **k: None)
    log(summary_line(dev) + (f" | {ctx.world_size} processes (DDP)" if ctx.enabled else ""))
    started = time.perf_counter()

    ds = load_data(data, base, image_size=image_size, val_fraction=val_fraction, seed=seed,
                   train_subset=train_subset, test_subset=test_subset, progress=progress)  # fmt: skip
    if ds.check is not None:
        log(ds.check.format(limit=5))
    init_source = "scratch" if custom else resolve_init(init, base.model, ds, log, base.init)
    fixed = {k for k, v in overrides.items() if v is not None}  # what the user chose stays as chosen
    recipe, notes = fit_to_data(base, len(ds.train_x), ds.recipe_tuned, init_source != "scratch", fixed)
    for note in notes:
        log(note)

    store = torch.bfloat16 if bf16 else torch.float32  # autocast casts to bf16 anyway: store it so
    train_x = to_tensor(ds.train_x, ds.mean, ds.std, dtype=store)
    inputs = {s: to_tensor(getattr(ds, f"{s}_x"), ds.mean, ds.std, dtype=store) for s in ("val", "test")}
    # airbench's BatchNorm eps of 1e-12 is tuned for CIFAR-10; other data may hold constant channels.
    model_kwargs = {"bn_eps": 1e-5} if not ds.recipe_tuned and accepts(recipe.model, "bn_eps") else {}
    torch.manual_seed(seed)
    if model is not None:
        net = _check_outputs(model, ds)
        if registered and not custom:
            recipe = replace(recipe, model=registered)  # the card names the architecture trained
    else:
        net = create_model(recipe.model, num_classes=ds.num_classes, input_size=ds.input_size, **model_kwargs)
    net = net.to(dev, memory_format=torch.channels_last)
    _check_takes_train_sizes(net, recipe, ds.input_size, dev)
    if init_source != "scratch":
        log(load_matching(net, init_source, ds.classes))
    elif hasattr(net, "init_whiten"):
        net.init_whiten(train_x[:5000].to(dev))
    train_y = torch.as_tensor(ds.train_y).long()
    batches = EpochBatches(train_x, train_y, recipe, seed, ctx.rank, ctx.world_size, device=dev, mean=ds.mean,
                           std=ds.std)  # fmt: skip
    steps_per_epoch = len(batches)
    total_steps, _ = batches.schedule()
    opts = make_optimizers(net, recipe, total_steps, steps_per_epoch)
    counts = torch.bincount(train_y, minlength=ds.num_classes).float()
    weight = (counts.sum() / (len(counts) * counts.clamp(min=1))).to(dev) if recipe.class_weights else None
    out = Path(out_dir) if out_dir else None
    run = Run(recipe=recipe, data=ds, model=net, net=net, device=dev, ctx=ctx, bf16=bf16, seed=seed,
              init=init_source, batches=batches, opts=opts, generator=torch.Generator().manual_seed(seed),
              total_steps=total_steps, inputs=inputs, class_weight=weight,
              checkpoint=out / CHECKPOINT_NAME if out else None, out_dir=out, log=log, progress=progress,
              custom=custom, model_kwargs={} if model is not None else model_kwargs, started=started,
              on_epoch=on_epoch)  # fmt: skip
    if resume:
        _resume(run)
    if tensorboard:
        run.runlog = _open_runlog(run)
    log(f"Training {recipe.name}: model {'your module' if custom else recipe.model}, {ds.num_classes} classes, "
        f"{len(ds.train_x)} images of {ds.input_size} px, {recipe.epochs:g} epochs, batch {batches.batch_size}, "
        f"seed {seed}")  # fmt: skip
    run.net = distributed.wrap(net, ctx, dev)
    if compile:
        run.net = torch.compile(run.net)
    return run


def _check_outputs(model: nn.Module, ds: ImageDataset) -> nn.Module:
    """A user's module must give one logit per class of the data for images of its size."""
    was_training = model.training
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, 3, ds.input_size, ds.input_size))
    except Exception as exc:  # any error of the user's forward on the data's image size
        raise ValueError(f"your model fails on images of (N, 3, {ds.input_size}, {ds.input_size}): {exc}") from exc
    finally:
        model.train(was_training)
    if tuple(out.shape) != (2, ds.num_classes):
        raise ValueError(f"your model outputs shape {tuple(out.shape[1:])} per image, but the data has "
                         f"{ds.num_classes} classes: give it a head of {ds.num_classes} outputs")  # fmt: skip
    return model


def fit(run: Run) -> None:
    """Train for the recipe's epochs from where `run.state` stands; checkpoint after each."""
    _, n_epochs = run.batches.schedule()
    run.first_epoch = run.state["epoch"]
    for epoch in range(run.state["epoch"], n_epochs):
        t0 = time.perf_counter()
        stats = train_epoch(run, epoch)
        run.batches.end_epoch(run.ctx)
        stats["seconds"] = time.perf_counter() - t0
        if run.recipe.eval_every_epoch and len(run.inputs[_monitor_split(run)]):
            _monitor(run, stats)
        run.state["history"].append(stats)
        if run.runlog:
            run.runlog.epoch(stats)
        run.state["epoch"] = epoch + 1
        run.state["train_seconds"] += stats["seconds"]
        if run.checkpoint and run.ctx.is_main:
            _save_checkpoint(run)
        distributed.barrier(run.ctx)
        if run.on_epoch:
            run.on_epoch({**stats, "epochs": n_epochs})
    distributed.sync_buffers(run.model, run.ctx)


def _monitor_split(run: Run) -> str:
    """CIFAR-10 watches its test set each epoch (as it always has, for the bench's time-to-accuracy);
    your own data its validation split, so the test split stays untouched until the end."""
    return "test" if run.data.recipe_tuned else "val"


def _monitor(run: Run, stats: dict) -> None:
    """Per-epoch accuracy and loss, not counted as training time."""
    split = _monitor_split(run)
    labels = run.data.test_y if split == "test" else run.data.val_y
    t1 = time.perf_counter()
    logits = predict_logits(run.model, run.inputs[split], tta=0, batch_size=run.recipe.eval_batch_size,
                            autocast=run.bf16)  # fmt: skip
    metrics = compute_metrics(logits, labels, run.data.classes)
    stats[f"{split}_accuracy"], stats[f"{split}_loss"] = metrics.accuracy, metrics.loss
    stats["eval_seconds"] = time.perf_counter() - t1
    run.log(f"  epoch {stats['epoch']}: {split} accuracy {metrics.accuracy:.2%}")


def train_epoch(run: Run, epoch: int) -> dict:
    """One pass over the training batches; returns the epoch's loss, accuracy, lr and speed."""
    net, state, dev = run.net, run.state, run.device
    net.train()
    seen = 0
    # Running sums stay on the device: reading them every step would stall a GPU's queue.
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    show_every = 1 if dev.type == "cpu" else 10
    t0 = time.perf_counter()
    bar = tqdm(total=run.batches.steps(epoch), desc=f"epoch {epoch + 1}", disable=not run.progress, leave=True,
               dynamic_ncols=True)  # fmt: skip
    _, n_epochs = run.batches.schedule()
    for inputs, labels in run.batches.epoch(epoch, run.generator, n_epochs):
        if state["step"] >= run.total_steps:
            break
        inputs, labels = inputs.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        loss, logits = train_step(run, inputs, labels)
        if run.batches.losses is not None:  # hard-example focus: each image's loss, from logits we have
            run.batches.record_losses(F.cross_entropy(logits.detach().float(), labels, reduction="none"))
        state["step"] += 1
        seen += len(labels)
        loss_sum += loss.detach()
        correct += (logits.argmax(1) == labels).sum()
        if run.progress and state["step"] % show_every == 0:
            rate = seen / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                            img_s=f"{rate:.0f}", refresh=False)  # fmt: skip
        bar.update()
    bar.close()
    loss_total, correct_total = loss_sum.item(), correct.item()  # also waits for the GPU: honest timing
    return {"epoch": epoch + 1, "train_loss": loss_total / max(seen, 1), "train_accuracy": correct_total / max(seen, 1),
            "lr": run.opts.lr(), "images_per_second": seen / max(time.perf_counter() - t0, 1e-9)}  # fmt: skip


def train_step(run: Run, inputs: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward, loss, backward, optimizer step. Returns the summed loss and the logits."""
    n_out = int(len(inputs) * run.recipe.outlier_exposure)
    if n_out:  # outlier exposure: mosaics of this batch's patches, in the same forward pass
        inputs = torch.cat([inputs, batch_patch_shuffle(inputs, generator=run.generator)[:n_out]])
    with torch.autocast(run.device.type, dtype=torch.bfloat16, enabled=run.bf16):
        logits = run.net(inputs, **_forward_options(run))
    logits, outlier_logits = logits[: len(labels)], logits[len(labels) :]
    loss = F.cross_entropy(logits.float(), labels, weight=run.class_weight,
                           label_smoothing=run.recipe.label_smoothing, reduction="sum")  # fmt: skip
    if n_out:  # cross-entropy to the uniform distribution, summed like the loss above
        loss = loss - OUTLIER_WEIGHT * F.log_softmax(outlier_logits.float(), 1).mean(1).sum()
    # DDP averages gradients over processes: scale a summed loss back up to the global sum.
    (loss * run.ctx.world_size if run.opts.loss_reduction == "sum" else loss / len(labels)).backward()
    run.opts.step(run.state["step"])
    run.net.zero_grad(set_to_none=True)
    return loss, logits


def _forward_options(run: Run) -> dict:
    """Once the whitening bias is frozen (its lr is zero from then on), the airbench nets can skip
    its gradient, and with it the first conv group's input gradient: 4% (Zen 3) to 12% (Xeon) of a 32 px step,
    the same weights. Not under DDP, which expects a gradient for every parameter each step."""
    if run.custom or run.ctx.enabled or not hasattr(run.model, "whiten") or run.opts.whiten_steps is None:
        return {}
    return {"whiten_bias_grad": False} if run.state["step"] >= run.opts.whiten_steps else {}


def finalize(run: Run) -> TrainResult:
    """Test metrics with the recipe's test-time augmentation, calibration and the novelty
    detector's threshold fitted on the validation split (never on training or test images; the
    detector's statistics on training images), the model card and the model file."""
    d, recipe = run.data, run.recipe
    stage = None if run.custom else STAGE_LAYERS.get(recipe.model)  # features for the novelty detector
    logits, test_features = logits_and_features(run.model, run.inputs["test"], tta=recipe.tta,
                                                batch_size=recipe.eval_batch_size, autocast=run.bf16, stage=stage)  # fmt: skip
    metrics = compute_metrics(logits, d.test_y, d.classes)
    calibration, detector, novelty = {}, None, {}
    if len(d.val_x):
        val_logits, val_features = logits_and_features(run.model, run.inputs["val"], tta=recipe.tta,
                                                       batch_size=1000, autocast=run.bf16, stage=stage)  # fmt: skip
        calibration = calibrate(val_logits, d.val_y)
        if run.custom:  # saved as a torch.export program: no layer to hook when it is loaded
            novelty = {"score": "none", "why": "a torch.export program has no layer to hook: the flag is the "
                       "calibrated top probability alone"}  # fmt: skip
        else:
            detector = fit_on_training_images(
                run.model, d.train_x, d.train_y, (val_logits, val_features), mean=d.mean, std=d.std,
                temperature=calibration["temperature"], num_classes=d.num_classes, stage=stage, tta=recipe.tta,
                autocast=run.bf16, seed=run.seed)  # fmt: skip
        if detector is not None and len(d.test_x):
            flagged = detector.scores(logits, test_features, calibration["temperature"]) > detector.threshold
            novelty = detector.card() | {f"{d.test_split}_flagged": float(flagged.mean())}
        elif detector is not None:
            novelty = detector.card()
    history = run.state["history"]
    monitoring = sum(h.get("eval_seconds", 0.0) for h in history[run.first_epoch :])  # this call's epochs
    monitoring += run.runlog.seconds if run.runlog else 0.0  # logging, like monitoring, is not training
    elapsed = time.perf_counter() - run.started - monitoring  # data in memory + training + final evaluation
    card = ModelCard(
        model=CUSTOM_MODEL if run.custom else recipe.model, classes=d.classes, mean=d.mean, std=d.std,
        input_size=d.input_size, model_kwargs=run.model_kwargs, recipe=recipe.to_dict(), seed=run.seed,
        temperature=calibration.pop("temperature", 1.0),
        uncertain_threshold=calibration.pop("uncertain_threshold", 0.0), calibration=calibration, novelty=novelty,
        metrics={"test_accuracy": metrics.accuracy, "test_loss": metrics.loss, "tta": recipe.tta,
                 "split": d.test_split, "per_class_accuracy": metrics.to_dict()["per_class_accuracy"]},
        data=d.summary() | {"holdout_images": len(d.val_x)}, init=run.init, history=history,
        train_seconds=run.state["train_seconds"], total_seconds=elapsed, hardware=describe(run.device),
        versions={"cifar_cnn": __version__, "torch": torch.__version__, "numpy": np.__version__},
    )  # fmt: skip
    model_path = None
    if run.out_dir and run.ctx.is_main:
        model_path = run.out_dir / MODEL_NAME
        save_model(model_path, run.model, card, run.log, detector.tensors() if detector else None)
    _log_final(run, metrics, logits, card)
    run.log(_summary_table(run, metrics, elapsed, model_path))
    return TrainResult(run.model, metrics, card, model_path, history, run.state["train_seconds"], elapsed)


def _open_runlog(run: Run) -> RunLog | None:
    """TensorBoard events in the run folder: rank 0 only, none without an output folder. A resumed
    run's log is rewritten from its checkpoint's history, so it matches the checkpoint."""
    if run.out_dir is None or not run.ctx.is_main:
        return None
    runlog = RunLog(run.out_dir, run.state["history"])
    if runlog.active:
        run.log(f"TensorBoard logs in {run.out_dir} (view: {tensorboard_command(run.out_dir)})")
    return runlog


def _log_final(run: Run, metrics: Metrics, logits: torch.Tensor, card: ModelCard) -> None:
    """Confusion matrix, sample predictions (calibrated probabilities) and the recipe with the
    final metrics, at the last epoch's step; then the log is closed."""
    if run.runlog is None:
        return
    d, step = run.data, run.state["epoch"]
    probs = torch.softmax(logits / card.temperature, 1).numpy()
    run.runlog.final(metrics.confusion, d.classes, d.test_x, np.asarray(d.test_y).ravel(), probs, step,
                     d.test_split)  # fmt: skip
    recipe = run.recipe.to_dict()
    values = {"recipe": recipe.pop("name"), **recipe, "model": card.model, "seed": run.seed, "init": run.init,
              "data": d.name, "classes": d.num_classes, "input_size": d.input_size}  # fmt: skip
    final = {f"{d.test_split}_accuracy": metrics.accuracy, f"{d.test_split}_loss": metrics.loss,
             "train_seconds": run.state["train_seconds"]}  # fmt: skip
    run.runlog.hparams(values, final, step)
    run.runlog.close()


def save_model(path: Path, model: nn.Module, card: ModelCard, log: Callable[..., None] = print,
               novelty_tensors: dict[str, torch.Tensor] | None = None) -> None:  # fmt: skip
    """One `.safetensors` file: the weights, the novelty detector's `ood.*` statistics and the
    card. A user's module is stored as a
    torch.export program inside it, so it loads without the user's Python code; if torch.export
    cannot capture it, its weights are saved all the same (training is never lost) and the
    message says how to load them."""
    tensors = dict(model.state_dict())
    if card.model == CUSTOM_MODEL:
        from cifar_cnn.export import exported_program_bytes

        try:
            tensors = {"exported_program": exported_program_bytes(model, card.input_size)}
        except CifarCnnError as exc:
            log(f"warning: {exc}. Saved the weights and card only: load them in Python with "
                f"cifar_cnn.load_weights({str(path)!r}, YourModule())")  # fmt: skip
    save_tensors(path, {**tensors, **(novelty_tensors or {})}, card.to_dict())


def _save_checkpoint(run: Run) -> None:
    tensors = {f"model.{k}": v for k, v in run.model.state_dict().items()}
    extras = []
    for i, opt in enumerate(run.opts.optimizers):
        t, extra = optimizer_tensors(opt, f"optim.{i}.")
        tensors.update(t)
        extras.append(extra)
    if run.batches.losses is not None:
        tensors["data.losses"] = run.batches.losses.cpu()
    tensors["rng.generator"] = run.generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"kind": "training_checkpoint", "recipe": run.recipe.to_dict(), "seed": run.seed, "optimizers": extras,
            "data_sha256": run.data.sha256, "init": run.init, **run.state}  # fmt: skip
    save_tensors(run.checkpoint, tensors, meta)


def _resume(run: Run) -> None:
    path = run.checkpoint
    if path is None or not path.is_file():
        raise CheckpointError(f"nothing to resume: no {CHECKPOINT_NAME} in {run.out_dir}")
    tensors, meta = load_tensors(path)
    if meta.get("kind") != "training_checkpoint":
        raise CheckpointError(f"{path} is not a training checkpoint")
    if Recipe.from_dict(meta["recipe"]) != run.recipe:
        raise CheckpointError(
            f"{path} was made with another recipe ({meta['recipe']['name']}); resume with the same one"
        )
    if meta.get("data_sha256") not in (None, run.data.sha256):
        raise CheckpointError(f"{path} was trained on other data; resume with the same data, or --overwrite")
    try:
        run.model.load_state_dict(split_prefix(tensors, "model."))
        for i, opt in enumerate(run.opts.optimizers):
            load_optimizer_tensors(opt, tensors, f"optim.{i}.", meta["optimizers"][i])
    except (RuntimeError, KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{path} does not match the model of recipe {run.recipe.name}: {exc}") from exc
    if run.batches.losses is not None:
        if tensors.get("data.losses") is None or len(tensors["data.losses"]) != len(run.batches.losses):
            raise CheckpointError(f"{path} lacks the per-image losses of recipe {run.recipe.name}'s hard-example focus")
        run.batches.losses.copy_(tensors["data.losses"])
    run.generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    run.state = {k: meta[k] for k in ("epoch", "step", "history", "train_seconds")}
    run.log(f"Resuming {run.recipe.name} from epoch {run.state['epoch']} (step {run.state['step']}) of {path}")


def _summary_table(run: Run, metrics: Metrics, elapsed: float, model_path) -> str:
    recipe, split = run.recipe, run.data.test_split
    rows = [
        ("recipe", recipe.name),
        ("model", "your module" if run.custom else recipe.model),
        ("data", f"{run.data.name}: {run.data.num_classes} classes, {len(run.data.train_x)} training images"),
        ("init", run.init),
        ("epochs", f"{recipe.epochs:g}"),
        ("train time", f"{run.state['train_seconds']:.1f} s"),
        ("end to end (data + train + eval)", f"{elapsed:.1f} s"),
        (f"{split} accuracy (tta={recipe.tta})", f"{metrics.accuracy:.2%}"),
        (f"{split} loss", f"{metrics.loss:.4f}"),
        ("saved", str(model_path) if model_path else "-"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 30)
    return "\n".join([line, *(f"{k:<{width}}  {v}" for k, v in rows), line])


__all__ = ["CHECKPOINT_NAME", "MODEL_NAME", "EpochBatches", "Run", "TrainResult", "finalize",
           "fit", "prepare", "save_model", "train", "train_epoch", "train_step"]  # fmt: skip

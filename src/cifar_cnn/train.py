"""The training loop: whole dataset as tensors in memory, batched augmentation, bf16 autocast,
channels_last, a checkpoint after every epoch, exact resume.

    result = train("fast", out_dir="runs/fast", seed=0)
    result.metrics.accuracy
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from cifar_cnn import __version__, distributed
from cifar_cnn.calibrate import calibrate
from cifar_cnn.checkpoint import (
    load_optimizer_tensors,
    load_tensors,
    optimizer_tensors,
    save_tensors,
    split_prefix,
)
from cifar_cnn.data import CLASS_NAMES, arrays_sha256, load_cifar10
from cifar_cnn.errors import CheckpointError
from cifar_cnn.evaluate import Metrics, compute_metrics, predict_logits
from cifar_cnn.hardware import choose_device, describe, summary_line, use_bf16
from cifar_cnn.models import create_model, get_model_config
from cifar_cnn.optim import Optimizers, make_optimizers
from cifar_cnn.preprocess import batch_cutout, batch_flip, batch_translate, reflect_pad, to_tensor
from cifar_cnn.recipes import Recipe, get_recipe

CHECKPOINT_NAME = "checkpoint.safetensors"
MODEL_NAME = "model.safetensors"


@dataclass
class TrainResult:
    model: nn.Module
    metrics: Metrics
    metadata: dict
    model_path: Path | None
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0  # all epochs, including those before a resume
    total_seconds: float = 0.0  # this call: data to tensors + training + final evaluation


class EpochBatches:
    """Batches of one epoch from in-memory tensors, augmented as in airbench:
    - flip, derandomized: each image gets a random fixed flip once, then the whole set is
      mirrored every other epoch, so every image is seen both ways every two epochs;
    - translate: a random crop from reflect-padded images, drawn anew each epoch;
    - cutout: a random square of each batch's images set to zero (the mean).
    The tensors live on the training device (on a GPU the whole set fits: no host copies per
    batch); random draws come from a CPU generator, so a seed gives the same batches anywhere.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, recipe: Recipe, seed: int,
                 rank: int = 0, world_size: int = 1, device: torch.device | None = None):  # fmt: skip
        if device is not None:
            images, labels = images.to(device), labels.to(device)
        self.labels = labels
        self.rank, self.world_size = rank, world_size  # under torchrun: this process's slice of each batch
        self.batch_size = min(recipe.batch_size, len(images))
        self.translate = recipe.translate
        self.cutout = recipe.cutout
        self.size = images.shape[-1]
        if recipe.flip:
            images = batch_flip(images, torch.Generator().manual_seed(seed + 1))
        self.flip = recipe.flip
        self.images = reflect_pad(images, self.translate)

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size  # drop the last partial batch

    def epoch(self, epoch: int, generator: torch.Generator):
        images = self.images
        if self.translate:
            images = batch_translate(images, self.size, generator)
        if self.flip and epoch % 2 == 1:
            images = images.flip(-1)
        order = torch.randperm(len(images), generator=generator)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size][self.rank :: self.world_size]
            idx = idx.to(images.device)
            batch = images[idx]
            if self.cutout:
                batch = batch_cutout(batch, self.cutout, generator)
            yield batch, self.labels[idx]


def train(
    recipe: str | Recipe = "fast",
    *,
    data=None,
    out_dir: str | Path | None = None,
    seed: int = 0,
    resume: bool = False,
    device: str | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    progress: bool = True,
    compile: bool = False,
    **overrides,
) -> TrainResult:
    """Train a recipe (name or Recipe) on CIFAR-10 and evaluate it on the test set.

    Args:
        data: `((x_train, y_train), (x_test, y_test))` uint8 arrays; default `load_cifar10()`.
        out_dir: where the per-epoch checkpoint and final `model.safetensors` go (None: nowhere).
        resume: continue from `out_dir/checkpoint.safetensors`.
        train_subset, test_subset: use only the first N images (quick runs, tests).
        compile: run the training forward/backward through torch.compile. Compilation takes
            about 15 s on a GPU and pays off only on long runs; on CPU it needs a C++ compiler
            and gave no speed-up (README, Results).
        overrides: recipe fields to change, e.g. epochs=2.
    """
    recipe = (get_recipe(recipe) if isinstance(recipe, str) else recipe).override(**overrides)
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
    start = time.perf_counter()

    store = torch.bfloat16 if bf16 else torch.float32  # autocast casts to bf16 anyway: store it so
    d = _prepare_data(data, recipe, train_subset, test_subset, store, verbose=progress)

    torch.manual_seed(seed)
    model = create_model(recipe.model).to(dev, memory_format=torch.channels_last)
    if hasattr(model, "init_whiten"):
        model.init_whiten(d.train_x[:5000].to(dev))
    batches = EpochBatches(d.train_x, d.train_y, recipe, seed, ctx.rank, ctx.world_size, device=dev)
    steps_per_epoch = len(batches)
    total_steps = math.ceil(recipe.epochs * steps_per_epoch)
    opts = make_optimizers(model, recipe, total_steps, steps_per_epoch)
    generator = torch.Generator().manual_seed(seed)
    state = {"epoch": 0, "step": 0, "history": [], "train_seconds": 0.0}
    ckpt_path = Path(out_dir) / CHECKPOINT_NAME if out_dir else None
    if resume:
        if ckpt_path is None or not ckpt_path.is_file():
            raise CheckpointError(f"nothing to resume: no {CHECKPOINT_NAME} in {out_dir}")
        state = _load_checkpoint(ckpt_path, model, opts, generator, recipe)
        log(f"Resuming {recipe.name} from epoch {state['epoch']} (step {state['step']}) of {ckpt_path}")
    log(f"Training {recipe.name}: model {recipe.model}, {len(d.train_x)} images, {recipe.epochs} epochs, "
        f"batch {batches.batch_size}, seed {seed}")  # fmt: skip

    net = distributed.wrap(model, ctx, dev)  # the module that runs forward/backward
    if compile:
        net = torch.compile(net)
    n_epochs = math.ceil(total_steps / steps_per_epoch)
    first_epoch = state["epoch"]
    for epoch in range(state["epoch"], n_epochs):
        t0 = time.perf_counter()
        stats = _run_epoch(net, batches, epoch, generator, opts, state, total_steps, recipe, dev, bf16, progress,
                           ctx.world_size)  # fmt: skip
        stats["seconds"] = time.perf_counter() - t0
        if recipe.eval_every_epoch and len(d.test_x):
            t1 = time.perf_counter()
            logits = predict_logits(model, d.test_x, tta=0, batch_size=recipe.eval_batch_size, autocast=bf16)
            stats["test_accuracy"] = compute_metrics(logits, d.test_y, list(CLASS_NAMES)).accuracy
            stats["eval_seconds"] = time.perf_counter() - t1  # monitoring only: not counted as training time
            log(f"  epoch {epoch + 1}: test accuracy {stats['test_accuracy']:.2%}")
        state["history"].append(stats)
        state["epoch"] = epoch + 1
        state["train_seconds"] += stats["seconds"]
        if ckpt_path and ctx.is_main:
            _save_checkpoint(ckpt_path, model, opts, generator, recipe, seed, state)
        distributed.barrier(ctx)

    distributed.sync_buffers(model, ctx)

    metrics, calibration = _final_evaluation(model, d, recipe, bf16)
    monitoring = sum(h.get("eval_seconds", 0.0) for h in state["history"][first_epoch:])  # this call's epochs
    elapsed = time.perf_counter() - start - monitoring  # data in memory + training + final evaluation
    total_train = state["train_seconds"]
    metadata = model_metadata(model, recipe, seed, metrics, state["history"], dev, total_train, elapsed)
    metadata.update(calibration)
    metadata["data"] = {"sha256": d.sha256, "train_images": len(d.train_x), "holdout_images": len(d.hold_x),
                        "test_images": len(d.test_x)}  # fmt: skip
    model_path = None
    if out_dir and ctx.is_main:
        model_path = Path(out_dir) / MODEL_NAME
        save_tensors(model_path, model.state_dict(), metadata)
    log(_summary_table(recipe, metrics, total_train, elapsed, model_path))
    return TrainResult(model, metrics, metadata, model_path, state["history"], total_train, elapsed)


@dataclass
class _Tensors:
    """One run's data: normalized (N, 3, 32, 32) inputs, int64 training labels, uint8 (N, 1)
    evaluation labels; `hold_*` are training images kept out of training for calibration."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: np.ndarray
    hold_x: torch.Tensor
    hold_y: np.ndarray
    sha256: str  # of the full arrays given, before subsets: identifies the data set copy


def _prepare_data(data, recipe: Recipe, train_subset, test_subset, store: torch.dtype, verbose: bool) -> _Tensors:
    data = data if data is not None else load_cifar10(verbose=verbose)
    (x_train, y_train), (x_test, y_test) = data
    x_train, y_train = x_train[:train_subset], y_train[:train_subset]
    x_test, y_test = x_test[:test_subset], y_test[:test_subset]
    n = len(x_train) - min(recipe.holdout, len(x_train) // 10)  # the official batches come shuffled
    return _Tensors(
        train_x=to_tensor(x_train[:n], dtype=store),
        train_y=torch.as_tensor(y_train[:n].ravel()).long(),
        test_x=to_tensor(x_test, dtype=store),
        test_y=y_test,
        hold_x=to_tensor(x_train[n:], dtype=store),
        hold_y=y_train[n:],
        sha256=arrays_sha256(data),
    )


def _final_evaluation(model, d: _Tensors, recipe: Recipe, bf16: bool) -> tuple[Metrics, dict]:
    """Test metrics (with the recipe's test-time augmentation) and the calibration fitted on
    the held-out images."""
    logits = predict_logits(model, d.test_x, tta=recipe.tta, batch_size=recipe.eval_batch_size, autocast=bf16)
    metrics = compute_metrics(logits, d.test_y, list(CLASS_NAMES))
    if not len(d.hold_x):
        return metrics, {}
    hold_logits = predict_logits(model, d.hold_x, tta=recipe.tta, autocast=bf16)
    return metrics, calibrate(hold_logits, d.hold_y)


def _run_epoch(model, batches, epoch, generator, opts: Optimizers, state, total_steps, recipe, dev, bf16, progress,
               world_size=1):  # fmt: skip
    model.train()
    seen = 0
    # Running sums stay on the device: reading them every step would stall a GPU's queue.
    loss_sum = torch.zeros((), device=dev)
    correct = torch.zeros((), device=dev, dtype=torch.long)
    show_every = 1 if dev.type == "cpu" else 10
    t0 = time.perf_counter()
    bar = tqdm(total=len(batches), desc=f"epoch {epoch + 1}", disable=not progress, leave=True, dynamic_ncols=True)
    for inputs, labels in batches.epoch(epoch, generator):
        if state["step"] >= total_steps:
            break
        inputs, labels = inputs.to(dev, non_blocking=True), labels.to(dev, non_blocking=True)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=bf16):
            logits = model(inputs)
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=recipe.label_smoothing, reduction="sum")
        # DDP averages gradients over processes: scale a summed loss back up to the global sum.
        (loss * world_size if opts.loss_reduction == "sum" else loss / len(labels)).backward()
        opts.step(state["step"])
        model.zero_grad(set_to_none=True)
        state["step"] += 1
        seen += len(labels)
        loss_sum += loss.detach()
        correct += (logits.argmax(1) == labels).sum()
        if progress and state["step"] % show_every == 0:
            rate = seen / (time.perf_counter() - t0)
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / seen:.3f}",
                            img_s=f"{rate:.0f}", refresh=False)  # fmt: skip
        bar.update()
    bar.close()
    loss_total, correct_total = loss_sum.item(), correct.item()  # also waits for the GPU: honest timing
    return {"epoch": epoch + 1, "train_loss": loss_total / max(seen, 1), "train_accuracy": correct_total / max(seen, 1),
            "lr": opts.lr(), "images_per_second": seen / max(time.perf_counter() - t0, 1e-9)}  # fmt: skip


def model_metadata(model, recipe: Recipe, seed, metrics: Metrics, history, dev, train_seconds, elapsed) -> dict:
    config = get_model_config(recipe.model)
    return {
        "model": recipe.model,
        "classes": list(CLASS_NAMES),
        "mean": list(config.mean),
        "std": list(config.std),
        "input_size": list(config.input_size),
        "resize": "shorter side to 32 (antialiased bicubic), center crop 32x32",
        "recipe": recipe.to_dict(),
        "seed": seed,
        "metrics": {
            "test_accuracy": metrics.accuracy,
            "test_loss": metrics.loss,
            "tta": recipe.tta,
            "per_class_accuracy": metrics.to_dict()["per_class_accuracy"],
        },
        "history": history,
        "train_seconds": train_seconds,
        "total_seconds": elapsed,
        "temperature": 1.0,
        "hardware": describe(dev),
        "versions": {"cifar_cnn": __version__, "torch": torch.__version__, "numpy": np.__version__},
    }


def _save_checkpoint(path: Path, model, opts: Optimizers, generator, recipe, seed, state) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    extras = []
    for i, opt in enumerate(opts.optimizers):
        t, extra = optimizer_tensors(opt, f"optim.{i}.")
        tensors.update(t)
        extras.append(extra)
    tensors["rng.generator"] = generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"kind": "training_checkpoint", "recipe": recipe.to_dict(), "seed": seed, "optimizers": extras, **state}
    save_tensors(path, tensors, meta)


def _load_checkpoint(path: Path, model, opts: Optimizers, generator, recipe: Recipe) -> dict:
    tensors, meta = load_tensors(path)
    if meta.get("kind") != "training_checkpoint":
        raise CheckpointError(f"{path} is not a training checkpoint")
    if Recipe.from_dict(meta["recipe"]) != recipe:
        raise CheckpointError(
            f"{path} was made with another recipe ({meta['recipe']['name']}); resume with the same one"
        )
    try:
        model.load_state_dict(split_prefix(tensors, "model."))
        for i, opt in enumerate(opts.optimizers):
            load_optimizer_tensors(opt, tensors, f"optim.{i}.", meta["optimizers"][i])
    except (RuntimeError, KeyError, ValueError, IndexError) as exc:
        raise CheckpointError(f"{path} does not match the model of recipe {recipe.name}: {exc}") from exc
    generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    return {k: meta[k] for k in ("epoch", "step", "history", "train_seconds")}


def _summary_table(recipe, metrics, train_seconds, elapsed, model_path) -> str:
    rows = [
        ("recipe", recipe.name),
        ("model", recipe.model),
        ("epochs", f"{recipe.epochs}"),
        ("train time", f"{train_seconds:.1f} s"),
        ("end to end (data + train + eval)", f"{elapsed:.1f} s"),
        (f"test accuracy (tta={recipe.tta})", f"{metrics.accuracy:.2%}"),
        ("test loss", f"{metrics.loss:.4f}"),
        ("saved", str(model_path) if model_path else "-"),
    ]
    width = max(len(k) for k, _ in rows)
    line = "-" * (width + 30)
    return "\n".join([line, *(f"{k:<{width}}  {v}" for k, v in rows), line])

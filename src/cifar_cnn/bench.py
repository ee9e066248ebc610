"""`cifar-cnn bench`: time-to-accuracy over seeds, training FLOPs and efficiency against the
machine's measured bf16 matmul peak, inference speed, peak memory, and the ratio to the
Keras-tutorial CNN measured in the same run. Writes JSON and markdown under bench/results/.

Each training run happens in a fresh process, so its peak memory is its own.
"""

from __future__ import annotations

import json
import math
import re
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from cifar_cnn.hardware import choose_device, describe, use_bf16
from cifar_cnn.models import create_model
from cifar_cnn.recipes import Recipe, get_recipe


def gemm_peak(device: torch.device, n: int | None = None, repeats: int = 5) -> float:
    """FLOP/s of a large square matrix multiply in the training precision: the practical
    ceiling for convolution-heavy training on this machine."""
    n = n or (8192 if device.type == "cuda" else 4096)  # big enough to fill the machine
    dtype = torch.bfloat16 if use_bf16(device) else torch.float32
    a = torch.randn(n, n, dtype=dtype, device=device)
    b = torch.randn(n, n, dtype=dtype, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def step_flops(recipe: Recipe, batch_size: int, size: int = 32) -> tuple[int, int]:
    """(training FLOPs of one step on `size` px images, forward FLOPs of one 32 px image),
    counted by torch's FlopCounter."""
    model = create_model(recipe.model)
    x = torch.randn(batch_size, 3, size, size)
    y = torch.randint(0, 10, (batch_size,))
    with FlopCounterMode(display=False) as counter:
        F.cross_entropy(model(x), y).backward()
    train = counter.get_total_flops()
    model.eval()
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    return train, counter.get_total_flops()


def _eval_passes(recipe: Recipe) -> int:
    return {0: 1, 1: 2}.get(recipe.tta, 6)  # forward passes per test image under its TTA


def run_flops(recipe: Recipe, n_train: int, n_test: int) -> tuple[float, float]:
    """(training FLOPs, final-evaluation FLOPs) of a whole run: every training step, then the
    test-time augmented evaluation of the test set (progressive resizing: each epoch at its size)."""
    batch = min(recipe.batch_size, n_train)
    plan = recipe.epoch_steps(n_train)  # steps per epoch (fewer under the hard-example focus)
    counted = 8  # FLOPs are linear in the batch: count a small one, scale to the recipe's
    per_size: dict[int, float] = {}
    train = 0.0
    for epoch, steps in enumerate(plan):
        size = recipe.train_size(epoch, len(plan), 32)
        if size not in per_size:
            per_size[size] = step_flops(recipe, counted, size)[0] * batch / counted
        train += steps * per_size[size]
    per_image = step_flops(recipe, 1)[1]
    return train, n_test * _eval_passes(recipe) * per_image


def _train_one(recipe: Recipe, seed: int, train_subset, test_subset, save_dir, compile: bool = False) -> dict:
    """Runs in a fresh process: one training run, with its own peak memory."""
    from cifar_cnn.data import load_cifar10
    from cifar_cnn.train import train

    t0 = time.perf_counter()
    data = load_cifar10(verbose=False)
    load_seconds = time.perf_counter() - t0
    out_dir = Path(save_dir) / f"{recipe.name}-seed{seed}" if save_dir else None
    result = train(recipe, data=data, seed=seed, out_dir=out_dir, train_subset=train_subset, test_subset=test_subset,
                   progress=False, compile=compile)  # fmt: skip
    bench_inference = inference_speed(result.model, recipe)
    tta_eval_seconds, tta_eval_accuracy = _final_evaluation(result.model, recipe, data, test_subset)
    device = next(result.model.parameters()).device
    gpu = {"peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20} if device.type == "cuda" else {}
    return {
        **gpu,
        "seed": seed,
        # The accuracy of the timed evaluation (selective TTA where the recipe has it), as airbench
        # reports the accuracy of its timed one; the model card keeps that of every view.
        "accuracy": tta_eval_accuracy,
        "card_accuracy": result.metrics.accuracy,
        "train_seconds": result.train_seconds,
        "tta_eval_seconds": tta_eval_seconds,
        "total_seconds": result.total_seconds + load_seconds,
        "history": result.history,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        **bench_inference,
    }


@torch.no_grad()
def _final_evaluation(model: torch.nn.Module, recipe: Recipe, data, test_subset) -> tuple[float, float]:
    """Seconds and accuracy of the final test-time-augmented evaluation of the test set, timed
    alone (as airbench counts it in its time; our train_seconds does not)."""
    from cifar_cnn.evaluate import predict_logits
    from cifar_cnn.preprocess import CIFAR10_MEAN, CIFAR10_STD, to_tensor

    images = data[1][0][:test_subset] if test_subset else data[1][0]
    device = next(model.parameters()).device
    t = time.perf_counter()
    x = to_tensor(images, CIFAR10_MEAN, CIFAR10_STD).to(device)
    logits = predict_logits(model, x, tta=recipe.tta, batch_size=recipe.eval_batch_size, autocast=use_bf16(device),
                            tta_below=recipe.tta_below)  # fmt: skip
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t
    labels = torch.as_tensor(data[1][1][: len(images)].ravel()).long()
    return seconds, float((logits.argmax(1) == labels).float().mean())


@torch.no_grad()
def inference_speed(model: torch.nn.Module, recipe: Recipe, batch: int = 1000) -> dict:
    from cifar_cnn.evaluate import predict_logits

    device = next(model.parameters()).device
    bf16 = use_bf16(device)
    x = torch.randn(batch, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    predict_logits(model, x[:100], autocast=bf16)
    t = time.perf_counter()
    predict_logits(model, x, autocast=bf16)
    batched = batch / (time.perf_counter() - t)
    latencies = []
    for tta in (0, recipe.tta):
        one = x[:1]
        for _ in range(3):
            predict_logits(model, one, tta=tta, autocast=bf16)
        times = []
        for _ in range(30):
            t = time.perf_counter()
            predict_logits(model, one, tta=tta, autocast=bf16)
            times.append(time.perf_counter() - t)
        latencies.append(statistics.median(times) * 1000)
    return {"inference_images_per_second": batched, "latency_ms": latencies[0], "latency_ms_tta": latencies[1]}


def bench_recipe(
    recipe: Recipe, seeds: list[int], train_subset=None, test_subset=None, save_dir=None, log=print, compile=False
) -> dict:
    runs = []
    for seed in seeds:
        with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
            run = pool.submit(_train_one, recipe, seed, train_subset, test_subset, save_dir, compile).result()
        log(f"  {recipe.name} seed {seed}: {run['accuracy']:.2%} in {run['total_seconds']:.1f} s end to end "
            f"({run['train_seconds']:.1f} s training), peak {run['peak_rss_mib']:.0f} MiB")  # fmt: skip
        runs.append(run)
    accs = [r["accuracy"] for r in runs]
    mean = statistics.fmean
    return {
        "recipe": recipe.name,
        "config": recipe.to_dict(),
        "seeds": seeds,
        "mean_accuracy": mean(accs),
        "std_accuracy": statistics.stdev(accs) if len(accs) > 1 else 0.0,
        "train_seconds": mean([r["train_seconds"] for r in runs]),
        "tta_eval_seconds": mean([r.get("tta_eval_seconds", 0.0) for r in runs]),
        "total_seconds": mean([r["total_seconds"] for r in runs]),
        "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
        **({"peak_gpu_mib": max(r["peak_gpu_mib"] for r in runs)} if "peak_gpu_mib" in runs[0] else {}),
        "inference_images_per_second": mean([r["inference_images_per_second"] for r in runs]),
        "latency_ms": mean([r["latency_ms"] for r in runs]),
        "latency_ms_tta": mean([r["latency_ms_tta"] for r in runs]),
        "runs": runs,
    }


def time_to_accuracy(runs: list[dict], target: float) -> float | None:
    """Mean training seconds until a run's per-epoch test accuracy first reaches `target`."""
    times = []
    for run in runs:
        elapsed = 0.0
        for epoch in run["history"]:
            elapsed += epoch["seconds"]
            if epoch.get("test_accuracy", 0) >= target:
                times.append(elapsed)
                break
        else:
            if run["accuracy"] >= target:
                times.append(run["train_seconds"])
            else:
                return None
    return statistics.fmean(times) if times else None


def bench(
    recipe: str = "fast",
    seeds: int = 5,
    baseline: str | None = "keras_cnn",
    out_dir: str | Path = "bench/results",
    compare: str | Path | None = None,
    train_subset: int | None = None,
    test_subset: int | None = None,
    save_models: str | Path | None = None,
    log=print,
    compile: bool = False,
    airbench: str | Path | None = None,
    airbench_runs: int = 3,
    airbench_precision: str = "auto",
    **overrides,
) -> tuple[dict, Path]:
    """Benchmark `recipe` over `seeds` seeds (and `baseline` over one), write JSON + markdown.
    `airbench`: also run the published airbench94_muon from this copy `airbench_runs` times in
    the same run (baselines.py) and record the ratio of times; `airbench_precision` "auto" runs
    it at the precision our training uses on this CPU (fp32 where bf16 is not native)."""
    device = choose_device()
    hardware = describe(device)
    log(f"Hardware: {hardware['cpu']} x{hardware['cpu_count']}, bf16={hardware['bf16']}, amx={hardware['amx']}, "
        f"torch {hardware['torch']}{', GPU ' + hardware['gpu'] if 'gpu' in hardware else ''}")  # fmt: skip
    peak = gemm_peak(device)
    log(f"Measured matmul peak: {peak / 1e12:.3f} TFLOP/s")
    # Per-epoch test accuracy (not counted as training time) gives the time-to-accuracy curve.
    main_recipe = get_recipe(recipe).override(**overrides, eval_every_epoch=True)
    n_train, n_test = train_subset or 50000, test_subset or 10000
    result = bench_recipe(main_recipe, list(range(seeds)), train_subset, test_subset, save_models, log, compile)
    _add_efficiency(result, main_recipe, peak, n_train, n_test)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    report = {**result, "hardware": hardware, "gemm_peak_flops": peak, "date": _now(), "overrides": overrides,
              "compile": compile}  # fmt: skip
    if baseline:
        base_recipe = get_recipe(baseline).override(**overrides)
        base = bench_recipe(base_recipe, [0], train_subset, test_subset, save_models, log, compile)
        _add_efficiency(base, base_recipe, peak, n_train, n_test)
        to_pass = time_to_accuracy(result["runs"], base["mean_accuracy"])
        base["time_to_pass_seconds"] = to_pass
        base["time_to_pass_ratio"] = to_pass / base["train_seconds"] if to_pass is not None else None
        report["baseline"] = base
    if airbench:
        from cifar_cnn.baselines import compare as compare_airbench
        from cifar_cnn.baselines import run_airbench

        report["airbench"] = run_airbench(airbench, airbench_runs, log, precision=airbench_precision)
        report["airbench"]["comparison"] = compare_airbench(result, report["airbench"])
    path = _write(report, Path(out_dir))
    log(markdown(report))
    if compare:
        log(comparison(report, json.loads(Path(compare).read_text())))
    log(f"Results written to {path} and {path.with_suffix('.md')}")
    return report, path


def _add_efficiency(result: dict, recipe: Recipe, peak: float, n_train: int, n_test: int) -> None:
    train_flops, eval_flops = run_flops(recipe, n_train, n_test)
    result["run_pflops"] = (train_flops + eval_flops) / 1e15
    result["achieved_train_flops"] = train_flops / result["train_seconds"]
    result["train_efficiency"] = result["achieved_train_flops"] / peak
    result["train_images_per_second"] = statistics.fmean(
        h["images_per_second"] for r in result["runs"] for h in r["history"]
    )
    per_image = eval_flops / max(n_test * _eval_passes(recipe), 1)
    result["inference_efficiency"] = result["inference_images_per_second"] * per_image / peak


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _write(report: dict, out_dir: Path) -> Path:
    from cifar_cnn.checkpoint import atomic_write_bytes

    cpu = re.sub(r"[^a-z0-9]+", "-", report["hardware"].get("gpu", report["hardware"]["cpu"]).lower()).strip("-")
    stamp = report["date"].replace(":", "").replace("-", "")
    path = out_dir / f"{report['recipe']}-{cpu}-{stamp}.json"
    atomic_write_bytes(path, json.dumps(report, indent=2, default=_jsonable).encode())
    atomic_write_bytes(path.with_suffix(".md"), (markdown(report) + "\n").encode())
    return path


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serializable: {type(value)}")


def _row(r: dict) -> str:
    return (f"| {r['recipe']} | {len(r['seeds'])} | {r['mean_accuracy']:.2%} ± {r['std_accuracy']:.2%} | "
            f"{r['total_seconds']:.0f} | {r['train_seconds']:.0f} | {r['run_pflops']:.3f} | "
            f"{r['train_images_per_second']:.0f} | {r['train_efficiency']:.0%} | "
            f"{r['inference_images_per_second']:.0f} | {r['latency_ms']:.1f} / {r['latency_ms_tta']:.1f} | "
            f"{r['peak_rss_mib']:.0f} |")  # fmt: skip


def markdown(report: dict) -> str:
    hw = report["hardware"]
    lines = [
        f"Benchmark {report['date']} on {hw.get('gpu', hw['cpu'])} ({hw['torch_threads']} threads, "
        f"bf16={hw['bf16']}, AMX={hw['amx']}, torch {hw['torch']}); matmul peak "
        f"{report['gemm_peak_flops'] / 1e12:.3f} TFLOP/s" + (f"; overrides {report['overrides']}" if report["overrides"] else ""),
        "",
        "| recipe | seeds | test accuracy (mean ± std) | end-to-end s | train s | PFLOPs/run | train img/s "
        "| efficiency vs peak | inference img/s | latency ms (plain / TTA) | peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
        _row(report),
    ]  # fmt: skip
    base = report.get("baseline")
    if base:
        lines.append(_row(base))
    gpu = [f"{r['recipe']} {r['peak_gpu_mib']:.0f} MiB" for r in (report, base) if r and "peak_gpu_mib" in r]
    if gpu:
        lines += ["", "Peak GPU memory allocated: " + ", ".join(gpu) + "."]
    if report.get("compile"):
        lines += ["", "Trained through torch.compile (compilation counted in the training time)."]
    if base and base.get("time_to_pass_seconds") is not None:
        lines += ["", f"`{report['recipe']}` passes `{base['recipe']}`'s final accuracy ({base['mean_accuracy']:.2%}) "
                  f"after {base['time_to_pass_seconds']:.0f} s of training: {base['time_to_pass_ratio']:.2f}x "
                  f"`{base['recipe']}`'s {base['train_seconds']:.0f} s."]  # fmt: skip
    if report.get("airbench"):
        lines += ["", *airbench_lines(report)]
    return "\n".join(lines)


def airbench_lines(report: dict) -> list[str]:
    """The side-by-side with the published airbench94_muon (CPU port), same machine, same run."""
    a, c = report["airbench"], report["airbench"]["comparison"]
    precision = f", {a['precision']}" if a.get("precision") else ""
    rows = [f"| airbench94_muon ({(a.get('commit') or 'copy')[:12]}{precision}) | {len(a['runs'])} | "
            f"{a['mean_accuracy']:.2%} ± {a['std_accuracy']:.2%} | {a['seconds']:.0f} |",
            f"| {report['recipe']} | {len(report['seeds'])} | {report['mean_accuracy']:.2%} ± "
            f"{report['std_accuracy']:.2%} | {c['our_seconds']:.0f} |"]  # fmt: skip
    verdict = ("at matched accuracy" if c["matched"] else
               f"but {-c['accuracy_difference']:.2%} less accurate: the ratio does not count")  # fmt: skip
    return ["Against the published record script, same machine, same run (seconds: training + final TTA "
            "evaluation, as airbench counts them):", "",
            "| script | runs | test accuracy (mean ± std) | seconds |", "|---|---|---|---|", *rows, "",
            f"Ratio of times: **{c['ratio']:.2f}x** airbench's, {verdict} "
            f"({c['accuracy_difference'] * 100:+.2f} points)."]  # fmt: skip


def comparison(new: dict, old: dict) -> str:
    lines = [f"Compared with {old.get('date')} ({old['hardware'].get('cpu')}):"]
    for key in ("mean_accuracy", "total_seconds", "train_seconds", "train_efficiency", "peak_rss_mib"):
        if key in old and key in new:
            lines.append(f"  {key}: {old[key]:.4g} -> {new[key]:.4g} ({new[key] / old[key] - 1:+.1%})")
    return "\n".join(lines)


def profile_training(recipe_name: str = "fast", steps: int = 4, out_dir: str | Path = "bench/results") -> Path:
    """Where a training step's time goes: torch.profiler's per-operator table for a few steps
    of the recipe at its real batch size, on random data, through the trainer's own `train_step`."""
    from torch.profiler import ProfilerActivity, profile

    from cifar_cnn.train import prepare, train_step

    recipe = get_recipe(recipe_name)
    rng = np.random.default_rng(0)
    n = recipe.batch_size + recipe.batch_size // 9 + 1  # one full batch after the holdout
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, (n, 1)).astype(np.uint8)
    run = prepare(recipe, data=((images, labels), (images[:10], labels[:10])), progress=False, epochs=steps + 1)
    x, y = next(run.batches.epoch(0, run.generator))
    train_step(run, x, y)  # warm-up: oneDNN picks its kernels on the first call
    device = run.device
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(steps):
            train_step(run, x, y)
            run.state["step"] += 1
    sort = "cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    table = prof.key_averages().table(sort_by=sort, row_limit=25)
    hw = describe(device)
    header = (f"Profile of {steps} training steps of '{recipe_name}' (batch {len(x)}) on {hw.get('gpu', hw['cpu'])} "
              f"({'bf16 autocast' if run.bf16 else 'fp32'}, {torch.get_num_threads()} threads), {_now()}\n")  # fmt: skip
    path = Path(out_dir) / f"profile-{recipe_name}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(header + table)
    return path

"""The published world-record script as a baseline, run beside our recipe in one benchmark.

    cifar-cnn bench --recipe fast --seeds 5 --baseline airbench PATH --baseline-runs 3

PATH is your copy of KellerJordan/cifar10-airbench (its `airbench94_muon.py`, or a git directory
holding it): the project never contains that code. `../shared/tools/airbench-cpu` (or the script
named by $CIFAR_CNN_AIRBENCH_TOOL) ports it to the CPU at run time (fp32 parameters, bf16
autocast, no torch.compile) and runs it on the shared CIFAR-10 copy; its per-epoch table is
parsed here. Its `time_seconds` counts training and the final test-time-augmented evaluation,
as upstream does, so ours is compared on the same span: training plus the final TTA evaluation.

On a CPU without native bf16 our recipes train in fp32 (hardware.use_bf16), where bf16 autocast
is emulated and about twice as slow: the baseline then runs in fp32 too (`precision="auto"`), so
the ratio compares recipes at one precision, not emulated bf16 with fp32.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

from cifar_cnn.errors import CifarCnnError

TOOL_ENV = "CIFAR_CNN_AIRBENCH_TOOL"
TOOL_NAME = "airbench-cpu"
PRECISIONS = ("auto", "bf16", "fp32")
# Imported first by every Python process of an fp32 baseline run (the tool, and the script it
# execs), through PYTHONPATH: the port's CPU bf16 autocast regions then run in fp32. The
# published code itself is untouched.
FP32_SITECUSTOMIZE = """\
import torch


class _NoCpuAutocast(torch.autocast):
    def __init__(self, device_type, dtype=None, enabled=True, cache_enabled=None):
        enabled = enabled and device_type != "cpu"
        super().__init__(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled)


torch.autocast = _NoCpuAutocast
"""
COLUMNS = ("run", "epoch", "train_acc", "val_acc", "tta_val_acc", "time_seconds")


def airbench_tool() -> Path:
    """The porting script: $CIFAR_CNN_AIRBENCH_TOOL, else shared/tools/airbench-cpu beside the
    project (looked for above the working folder and above this package)."""
    if os.environ.get(TOOL_ENV):
        path = Path(os.environ[TOOL_ENV])
        if not path.is_file():
            raise CifarCnnError(f"${TOOL_ENV} is {path}, which is not a file")
        return path
    starts = [Path.cwd(), Path(__file__).resolve()]
    for start in starts:
        for folder in [start, *start.parents]:
            candidate = folder / "shared" / "tools" / TOOL_NAME
            if candidate.is_file():
                return candidate
    raise CifarCnnError(f"cannot find {TOOL_NAME} (looked for shared/tools/{TOOL_NAME} above {Path.cwd()}): "
                        f"set ${TOOL_ENV} to its path")  # fmt: skip


def parse_rows(lines: Iterable[str]) -> list[dict]:
    """airbench's printed table -> one dict per run: {"run", "accuracy" (tta_val_acc),
    "seconds" (time_seconds), "epochs": [{"epoch", "train_acc", "val_acc", "seconds"}]}."""
    runs: list[dict] = []
    for line in lines:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != len(COLUMNS) or not line.lstrip().startswith("|") or cells[1] == "epoch":
            continue
        row = dict(zip(COLUMNS, cells, strict=True))
        if row["run"]:  # the first row of a run names it
            runs.append({"run": row["run"], "epochs": []})
        if not runs:
            continue
        if row["epoch"] == "eval":
            runs[-1]["accuracy"] = float(row["tta_val_acc"])
            runs[-1]["seconds"] = float(row["time_seconds"])
        else:
            runs[-1]["epochs"].append({"epoch": int(row["epoch"]), "train_acc": float(row["train_acc"]),
                                       "val_acc": float(row["val_acc"]), "seconds": float(row["time_seconds"])})  # fmt: skip
    return [r for r in runs if "accuracy" in r]


def run_airbench(source: str | os.PathLike, runs: int = 3, log: Callable[[str], None] = print,
                 precision: str = "auto") -> dict:  # fmt: skip
    """Run the published airbench94_muon `runs` times on this machine (one process) and summarize.
    `precision`: "bf16" (the port's autocast), "fp32" (autocast off), "auto" (what our training
    uses on this CPU). Raises CifarCnnError when the tool or the source is missing or the script
    fails."""
    if precision not in PRECISIONS:
        raise CifarCnnError(f"baseline precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    source = Path(source)
    if not source.exists():
        raise CifarCnnError(f"airbench source {source} does not exist: give airbench94_muon.py or a git directory "
                            "of KellerJordan/cifar10-airbench (the `fetch` tool gives one)")  # fmt: skip
    tool = airbench_tool()
    log(f"airbench94_muon x{runs} from {source} via {tool}")
    import torch

    from cifar_cnn.hardware import allocator_env, use_bf16

    if precision == "auto":
        precision = "bf16" if use_bf16(torch.device("cpu")) else "fp32"
    # The same allocator policy as our training, so the ratio measures the recipes, not malloc.
    env = {**os.environ, **allocator_env(torch.device("cpu"))}
    with tempfile.TemporaryDirectory(prefix="airbench-fp32-") as site:
        if precision == "fp32":
            Path(site, "sitecustomize.py").write_text(FP32_SITECUSTOMIZE)
            env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
        log(f"airbench94_muon in {precision}" + (" (its bf16 autocast turned off, as our training runs here)"
                                                  if precision == "fp32" else ""))  # fmt: skip
        lines = _run_tool(tool, source, runs, env, log)
    parsed = parse_rows(lines)
    if len(parsed) != runs:
        raise CifarCnnError(f"airbench printed {len(parsed)} finished runs, expected {runs}")
    accuracies, seconds = [r["accuracy"] for r in parsed], [r["seconds"] for r in parsed]
    return {"recipe": "airbench94_muon", "source": str(source), "commit": _commit(source), "tool": str(tool),
            "runs": parsed, "mean_accuracy": statistics.fmean(accuracies),
            "std_accuracy": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "seconds": statistics.fmean(seconds), "glibc_tunables": env.get("GLIBC_TUNABLES", ""),
            "precision": precision}  # fmt: skip


def _run_tool(tool: Path, source: Path, runs: int, env: dict, log: Callable[[str], None]) -> list[str]:
    proc = subprocess.Popen([sys.executable, str(tool), str(source), str(runs)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, bufsize=1, env=env)  # fmt: skip
    lines: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line)
        log("  airbench " + line.rstrip())
    if proc.wait() != 0:
        raise CifarCnnError(f"airbench exited with status {proc.returncode}: {''.join(lines[-5:]).strip()}")
    return lines


def _commit(source: Path) -> str | None:
    git_dir = ["--git-dir", str(source)] if source.is_dir() else ["-C", str(source.parent)]
    try:
        out = subprocess.run(["git", *git_dir, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def compare(ours: dict, theirs: dict) -> dict:
    """Our recipe against airbench on the same span (training + final TTA evaluation): the ratio
    of mean seconds, and whether our mean accuracy matches theirs (only then does the ratio count)."""
    our_seconds = ours["train_seconds"] + ours.get("tta_eval_seconds", 0.0)
    return {"our_seconds": our_seconds, "their_seconds": theirs["seconds"],
            "ratio": our_seconds / theirs["seconds"],
            "accuracy_difference": ours["mean_accuracy"] - theirs["mean_accuracy"],
            "matched": ours["mean_accuracy"] >= theirs["mean_accuracy"]}  # fmt: skip

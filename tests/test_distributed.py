"""Two-process gloo training on CPU under torchrun: identical weights on both ranks, and close to
a single-process run with the same global batch."""

import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent(
    """
    import sys
    import torch.distributed as dist
    from safetensors.torch import save_file
    from cifar_cnn.data import load_cifar10
    from cifar_cnn.train import train

    out = sys.argv[1]
    result = train("fast", data=load_cifar10(verbose=False), train_subset=5000, test_subset=1000, epochs=2,
                   batch_size=500, progress=False, seed=0)
    rank = dist.get_rank() if dist.is_initialized() else "single"
    state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, f"{out}/rank-{rank}.safetensors", metadata={"accuracy": str(result.metrics.accuracy)})
    """
)


def torchrun_two(script, out, timeout: int) -> subprocess.CompletedProcess:
    """Run `script OUT` in two gloo processes under torchrun."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script), str(out)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path, real_data):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    done = torchrun_two(script, tmp_path, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    single = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=900)
    assert single.returncode == 0, single.stderr[-3000:]

    r0, r1 = load_file(tmp_path / "rank-0.safetensors"), load_file(tmp_path / "rank-1.safetensors")
    assert all(torch.equal(r0[k], r1[k]) for k in r0), "ranks ended with different weights"

    from safetensors import safe_open

    def accuracy(name):
        with safe_open(tmp_path / name, "pt") as f:
            return float(f.metadata()["accuracy"])

    ddp, one = accuracy("rank-0.safetensors"), accuracy("rank-single.safetensors")
    assert ddp > 0.35 and one > 0.35  # both learned (chance is 10%)
    assert abs(ddp - one) < 0.05, (ddp, one)  # same global batch and schedule: close results
    s = load_file(tmp_path / "rank-single.safetensors")
    w_ddp, w_one = r0["head.weight"], s["head.weight"]
    assert torch.nn.functional.cosine_similarity(w_ddp.flatten(), w_one.flatten(), dim=0) > 0.9


FOCUS_SCRIPT = textwrap.dedent(
    """
    import sys
    import numpy as np
    import torch
    import torch.distributed as dist
    from cifar_cnn.train import prepare, fit

    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (444, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, (444, 1)).astype(np.uint8)
    run = prepare("fast", data=((x, y), (x[:20], y[:20])), epochs=3, batch_size=40, drop_easy=0.5,
                  drop_easy_from=1, progress=False, tensorboard=False)
    fit(run)
    torch.save({"losses": run.batches.losses, "steps": run.state["step"],
                "weights": run.model.state_dict()}, f"{sys.argv[1]}/focus-{dist.get_rank()}.pt")
    """
)


@pytest.mark.slow
def test_hard_example_focus_under_torchrun_gives_every_rank_the_same_images(tmp_path):
    """Each rank sees only its slice of a batch: their losses are merged each epoch, so both rank
    the images alike, take the same number of steps (no hang) and end with the same weights."""
    script = tmp_path / "focus_ddp.py"
    script.write_text(FOCUS_SCRIPT)
    done = torchrun_two(script, tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    r0, r1 = torch.load(tmp_path / "focus-0.pt"), torch.load(tmp_path / "focus-1.pt")
    assert r0["steps"] == r1["steps"] == 10 + 2 * 5  # 400 images (a tenth held out), batch 40, half from epoch 2
    assert torch.equal(r0["losses"], r1["losses"]) and r0["losses"].isfinite().all()
    assert all(torch.equal(r0["weights"][k], r1["weights"][k]) for k in r0["weights"])

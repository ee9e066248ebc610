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


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path, real_data):
    script = tmp_path / "train_ddp.py"
    script.write_text(SCRIPT)
    env_cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(script),
        str(tmp_path),
    ]
    done = subprocess.run(env_cmd, capture_output=True, text=True, timeout=900)
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

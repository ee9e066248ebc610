"""Optimizers and learning-rate schedules of the recipes.

"muon" (airbench94_muon): conv filters are trained with Muon, momentum whose update is
orthogonalized by a Newton-Schulz iteration (Jordan et al. 2024); BN biases, the whitening bias
and the head use Nesterov SGD. All rates decay linearly to zero.
"adam": Adam with a short linear warmup and a linear decay, the Keras user's default.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cifar_cnn.hardware import use_bf16
from cifar_cnn.recipes import Recipe


def zeropower_via_newtonschulz5(g: torch.Tensor, steps: int = 3, eps: float = 1e-7,
                                dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:  # fmt: skip
    """Approximately orthogonalize a matrix (the nearest semi-orthogonal U V^T of g = U S V^T)
    with a quintic Newton-Schulz iteration tuned to converge fast, in bf16 where the hardware
    has native bf16 math (on a CPU without it, bf16 matmuls are emulated and ~9x slower than fp32)."""
    a, b, c = (3.4445, -4.7750, 2.0315)
    x = g.to(dtype)
    x = x / (x.norm() + eps)  # top singular value <= 1
    transposed = g.size(0) > g.size(1)
    if transposed:
        x = x.T
    for _ in range(steps):
        m = x @ x.T
        x = a * x + (b * m + c * m @ m) @ x
    return (x.T if transposed else x).to(g.dtype)


class Muon(torch.optim.Optimizer):
    """Momentum + orthogonalized updates for conv filters, with weight-norm projection."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.0, nesterov: bool = False,
                 dtype: torch.dtype = torch.bfloat16):  # fmt: skip
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov))
        self.dtype = dtype  # of the Newton-Schulz iteration

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, momentum = group["lr"], group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(p.grad)
                buf = state["momentum_buffer"]
                buf.mul_(momentum).add_(p.grad)
                g = p.grad.add(buf, alpha=momentum) if group["nesterov"] else buf
                p.mul_(len(p) ** 0.5 / p.norm())  # keep each filter bank at a fixed norm
                update = zeropower_via_newtonschulz5(g.reshape(len(g), -1), dtype=self.dtype).view(g.shape)
                p.add_(update, alpha=-lr)


@dataclass
class Optimizers:
    """The optimizers of a run, with an lr multiplier per param group as a function of step."""

    optimizers: list[torch.optim.Optimizer]
    # (optimizer, param group index, base lr, multiplier). Groups are addressed by index, not
    # held as dicts: Optimizer.load_state_dict (resume) replaces the group dicts.
    schedules: list[tuple[torch.optim.Optimizer, int, float, Callable[[int], float]]]
    loss_reduction: str  # airbench's rates are tuned for a summed loss
    whiten_steps: int | None = None  # "muon": the step from which the whitening bias is frozen

    def step(self, step: int) -> None:
        for opt, index, base_lr, multiplier in self.schedules:
            opt.param_groups[index]["lr"] = base_lr * multiplier(step)
        for opt in self.optimizers:
            opt.step()

    def lr(self) -> float:
        opt, index, _, _ = self.schedules[-1]
        return opt.param_groups[index]["lr"]


def make_optimizers(model: nn.Module, recipe: Recipe, total_steps: int, steps_per_epoch: int) -> Optimizers:
    if recipe.optimizer == "muon":
        return _muon(model, recipe, total_steps, steps_per_epoch)
    if recipe.optimizer == "adam":
        return _adam(model, recipe, total_steps)
    raise ValueError(f"unknown optimizer {recipe.optimizer!r} in recipe {recipe.name!r}")


def _linear_decay(total: int) -> Callable[[int], float]:
    return lambda step: max(0.0, 1 - step / max(1, total))


def _muon(model: nn.Module, recipe: Recipe, total_steps: int, steps_per_epoch: int) -> Optimizers:
    if not (hasattr(model, "whiten") and hasattr(model, "head")):
        raise ValueError(f"recipe {recipe.name!r} uses Muon tuned for the airbench networks (fast, medium, large); "
                         "train your own module with an Adam recipe such as 'keras_cnn'")  # fmt: skip
    bias_lr, head_lr = 0.053, 0.67  # airbench94_muon's values, for batch 2000 and a summed loss
    wd = recipe.weight_decay * recipe.batch_size
    filters = [p for p in model.parameters() if p.ndim == 4 and p.requires_grad]
    norm_biases = [p for n, p in model.named_parameters() if "norm" in n and p.requires_grad]
    sgd = torch.optim.SGD(
        [
            dict(params=[model.whiten.bias], lr=bias_lr, weight_decay=wd / bias_lr),
            dict(params=norm_biases, lr=bias_lr, weight_decay=wd / bias_lr),
            dict(params=[model.head.weight], lr=head_lr, weight_decay=wd / head_lr),
        ],
        momentum=0.85,
        nesterov=True,
    )
    device = filters[0].device if filters else torch.device("cpu")
    ns_dtype = torch.bfloat16 if device.type == "cuda" or use_bf16(device) else torch.float32
    muon = Muon(filters, lr=recipe.lr, momentum=0.6, nesterov=True, dtype=ns_dtype)
    whiten_steps = max(1, round(recipe.whiten_bias_epochs * steps_per_epoch))
    decay = _linear_decay(total_steps)
    schedules = [(sgd, 0, bias_lr, _linear_decay(whiten_steps))]
    schedules += [(sgd, i, sgd.param_groups[i]["lr"], decay) for i in (1, 2)]
    schedules += [(muon, 0, recipe.lr, decay)]
    # The whitening bias trains only early on: its lr reaches zero after `whiten_steps` and stays
    # there, which freezes it without changing which parameters get gradients (DDP needs that).
    return Optimizers([sgd, muon], schedules, loss_reduction="sum", whiten_steps=whiten_steps)


def _adam(model: nn.Module, recipe: Recipe, total_steps: int) -> Optimizers:
    adam = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    warm = max(1, round(recipe.warmup * total_steps))

    def warmup_then_decay(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return max(0.0, 1 - (step - warm) / max(1, total_steps - warm))

    return Optimizers([adam], [(adam, 0, recipe.lr, warmup_then_decay)], loss_reduction="mean")

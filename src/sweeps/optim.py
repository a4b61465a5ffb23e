"""AdamW and the learning-rate schedule of the stacked fold-models: the optimizer's whole story.

`torch.optim.AdamW(fused=True).step()` spends ~115 µs per step in Python bookkeeping
(hooks, grouping, state lookups) around an ~17 µs kernel on a small net: on the smallest
configurations that was 20 % of a trial. Holding the state as plain tensor lists and calling
`torch._fused_adamw_` does the same arithmetic (`tests/test_optim.py` compares with
`torch.optim.AdamW`); where that private kernel is missing, PyTorch's functional AdamW runs.

Gradient clipping is per fold-model (each fold's gradient norm over all its tensors), so a
fold trains the same inside the stack and alone.
"""

from __future__ import annotations

import math

import torch
from torch.optim.adamw import adamw as functional_adamw

SCHEDULES = ("constant", "cosine")
WARMUP = 0.05  # fraction of the schedule's horizon spent warming up (cosine)


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """The learning rate's multiplier at `step` (0-based) of a horizon of `total_steps`.

    "constant": 1. "cosine": a linear warm-up over the first 5 % of the steps, then half a
    cosine down to 0 at the horizon: torch's `LinearLR(start_factor=1/W)` for W steps, then
    `CosineAnnealingLR(T_max=total-W)` (`tests/test_optim.py` compares them). The horizon is
    the study's `max_epochs` for every trial and for the final fit, so trials that stop early
    were trained on the same curve, and the values the pruner compares stay comparable.
    """
    if schedule == "constant":
        return 1.0
    warmup = max(1, round(WARMUP * total_steps))
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup, total_steps - warmup) / max(1, total_steps - warmup)))


class StackedAdamW:
    """AdamW over `params`; `grads` are the buffers the backward pass writes into.

    `no_decay[i]` exempts tensor i from weight decay (a second fused call, only when used).
    """

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 no_decay: list[bool] | None = None) -> None:
        self.params = params
        self.grads = [torch.zeros_like(p) for p in params]
        self.exp_avgs = [torch.zeros_like(p) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in params]
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.no_decay = list(no_decay) if no_decay is not None else [False] * len(params)
        self.fused = hasattr(torch, "_fused_adamw_") and params[0].device.type in ("cpu", "cuda")
        split = any(self.no_decay) and weight_decay
        self._groups = ([[i for i, n in enumerate(self.no_decay) if not n], [i for i, n in enumerate(self.no_decay) if n]]
                        if split else [list(range(len(params)))])

    def step(self, lr_factor: float = 1.0) -> None:
        beta1, beta2 = self.betas
        lr = self.lr * lr_factor
        for g, members in enumerate(self._groups):
            weight_decay = self.weight_decay if g == 0 else 0.0
            pick = (lambda tensors: [tensors[i] for i in members]) if len(self._groups) > 1 else (lambda t: t)
            params, grads, avgs, sqs, steps = map(pick, (self.params, self.grads, self.exp_avgs,
                                                         self.exp_avg_sqs, self.steps))
            if self.fused:
                torch._foreach_add_(steps, 1)
                torch._fused_adamw_(params, grads, avgs, sqs, [], steps, lr=lr, beta1=beta1, beta2=beta2,
                                    weight_decay=weight_decay, eps=self.eps, amsgrad=False, maximize=False)
            else:
                with torch.no_grad():
                    functional_adamw(params, grads, avgs, sqs, [], steps, foreach=True, lr=lr, beta1=beta1,
                                     beta2=beta2, weight_decay=weight_decay, eps=self.eps, amsgrad=False,
                                     maximize=False)

    def clip(self, max_norm: float) -> None:
        """Scale each fold-model's gradient down to norm `max_norm` where it is larger."""
        k = self.grads[0].shape[0]
        squares = torch.stack([g.view(k, -1).square().sum(1) for g in self.grads]).sum(0)
        factor = (max_norm / (squares.sqrt_() + 1e-6)).clamp_(max=1.0)
        for g in self.grads:
            g.mul_(factor.view(k, *([1] * (g.ndim - 1))))

    def select(self, params: list[torch.Tensor], index: torch.Tensor) -> StackedAdamW:
        """The optimizer of a smaller stack (`params`, the folds at `index`), state carried over."""
        smaller = StackedAdamW(params, self.lr, self.weight_decay, self.betas, self.eps, self.no_decay)
        smaller.exp_avgs = [m[index] for m in self.exp_avgs]
        smaller.exp_avg_sqs = [v[index] for v in self.exp_avg_sqs]
        smaller.steps = [s.clone() for s in self.steps]  # all folds started together
        return smaller

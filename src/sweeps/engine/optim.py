"""AdamW and the learning-rate schedule of the stacked fold-models: the optimizer's whole story.

`torch.optim.AdamW(fused=True).step()` spends ~115 µs per step in Python bookkeeping
(hooks, grouping, state lookups) around an ~17 µs kernel on a small net: on the smallest
configurations that was 20 % of a trial. Holding the state as plain tensor lists and calling
`torch._fused_adamw_` does the same arithmetic (`tests/engine/test_optim.py` compares with
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
    `CosineAnnealingLR(T_max=total-W)` (`tests/engine/test_optim.py` compares them). The horizon is
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

    `no_decay[i]` exempts tensor i from weight decay (a second fused call, only when used);
    `frozen[i]` leaves tensor i as it is: no step, no decay, and out of gradient clipping's norm
    (feature extraction: the first layers of a transferred net stay fixed).
    """

    def __init__(self, params: list[torch.Tensor], lr: float, weight_decay: float,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 no_decay: list[bool] | None = None, segments: list[tuple[int, float, float, float]] | None = None,
                 frozen: list[bool] | None = None) -> None:
        """`segments`: stack positions trained with their own settings (trials trained together),
        as (positions, lr, weight_decay, beta2) in stack order; one kernel call each."""
        self.params = params
        self.grads = [torch.zeros_like(p) for p in params]
        self.exp_avgs = [torch.zeros_like(p) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in params]
        self.steps = [torch.zeros((), dtype=torch.float32, device=p.device) for p in params]
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.no_decay = list(no_decay) if no_decay is not None else [False] * len(params)
        self.segments = segments or [(params[0].shape[0], lr, weight_decay, betas[1])]
        self.fused = hasattr(torch, "_fused_adamw_") and params[0].device.type in ("cpu", "cuda")
        self.frozen = list(frozen) if frozen is not None else [False] * len(params)
        trained = [i for i, f in enumerate(self.frozen) if not f]
        split = any(self.no_decay[i] for i in trained) and any(wd for _, _, wd, _ in self.segments)
        self._groups = ([[i for i in trained if not self.no_decay[i]], [i for i in trained if self.no_decay[i]]]
                        if split else [trained])

    def step(self, lr_factor: float | list[float] = 1.0) -> None:
        """One AdamW step; `lr_factor` per segment (a schedule of its own each) or one for all."""
        beta1 = self.betas[0]
        factors = lr_factor if isinstance(lr_factor, list) else [lr_factor] * len(self.segments)
        one = len(self.segments) == 1
        if self.fused:
            torch._foreach_add_(self.steps, 1)
        start = 0
        for (count, lr, weight_decay, beta2), factor in zip(self.segments, factors):
            rows = slice(start, start + count)
            start += count
            for g, members in enumerate(self._groups):
                decay = weight_decay if g == 0 else 0.0
                every = len(members) == len(self.params)  # no decay split, nothing frozen: the lists as they are
                if one and every:
                    params, grads, avgs, sqs = self.params, self.grads, self.exp_avgs, self.exp_avg_sqs
                else:  # slices along the stack: contiguous views, updated in place
                    params, grads, avgs, sqs = ([t[i][rows] for i in members] for t in (
                        self.params, self.grads, self.exp_avgs, self.exp_avg_sqs))
                steps = self.steps if every else [self.steps[i] for i in members]
                if self.fused:
                    torch._fused_adamw_(params, grads, avgs, sqs, [], steps, lr=lr * factor, beta1=beta1,
                                        beta2=beta2, weight_decay=decay, eps=self.eps, amsgrad=False, maximize=False)
                else:
                    # The functional form counts steps itself: give it copies, the shared count moves below.
                    with torch.no_grad():
                        functional_adamw(params, grads, avgs, sqs, [], [s.clone() for s in steps], foreach=True,
                                         lr=lr * factor, beta1=beta1, beta2=beta2, weight_decay=decay, eps=self.eps,
                                         amsgrad=False, maximize=False)
        if not self.fused:
            torch._foreach_add_(self.steps, 1)

    def clip(self, max_norm: float | torch.Tensor) -> None:
        """Scale each fold-model's gradient down to norm `max_norm` where it is larger (one limit
        per stack position where a tensor; 0 there: no clipping)."""
        k = self.grads[0].shape[0]
        trained = [g for g, f in zip(self.grads, self.frozen) if not f]
        squares = torch.stack([g.view(k, -1).square().sum(1) for g in trained]).sum(0)
        factor = (max_norm / (squares.sqrt_() + 1e-6)).clamp_(max=1.0)
        if torch.is_tensor(max_norm):
            factor = torch.where(max_norm > 0, factor, torch.ones_like(factor))
        for g in trained:
            g.mul_(factor.view(k, *([1] * (g.ndim - 1))))

    def select(self, params: list[torch.Tensor], index: torch.Tensor,
               segments: list[tuple[int, float, float, float]] | None = None) -> StackedAdamW:
        """The optimizer of a smaller stack (`params`, the folds at `index`), state carried over."""
        smaller = StackedAdamW(params, self.lr, self.weight_decay, self.betas, self.eps, self.no_decay, segments,
                               self.frozen)
        smaller.exp_avgs = [m[index] for m in self.exp_avgs]
        smaller.exp_avg_sqs = [v[index] for v in self.exp_avg_sqs]
        smaller.steps = [s.clone() for s in self.steps]  # all folds started together
        return smaller

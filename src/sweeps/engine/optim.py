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
                 frozen: list[bool] | None = None, steps: list[list[torch.Tensor]] | None = None) -> None:
        """`segments`: stack positions trained with their own settings (trials trained together),
        as (positions, lr, weight_decay, beta2) in stack order; one kernel call each. `steps`:
        each segment's step counters (one per tensor; AdamW's bias correction), which a trial
        keeps when it shares the stack with trials that started before it (fresh ones if None)."""
        self.params = params
        self.grads = [torch.zeros_like(p) for p in params]
        self.exp_avgs = [torch.zeros_like(p) for p in params]
        self.exp_avg_sqs = [torch.zeros_like(p) for p in params]
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.no_decay = list(no_decay) if no_decay is not None else [False] * len(params)
        self.segments = segments or [(params[0].shape[0], lr, weight_decay, betas[1])]
        self.steps = steps if steps is not None else [new_steps(params) for _ in self.segments]
        self.fused = hasattr(torch, "_fused_adamw_") and params[0].device.type in ("cpu", "cuda")
        self.frozen = list(frozen) if frozen is not None else [False] * len(params)
        trained = [i for i, f in enumerate(self.frozen) if not f]
        split = any(self.no_decay[i] for i in trained) and any(wd for _, _, wd, _ in self.segments)
        self._groups = ([[i for i in trained if not self.no_decay[i]], [i for i in trained if self.no_decay[i]]]
                        if split else [trained])
        self._calls: tuple[list, list[torch.Tensor]] | None = None  # `_kernel_calls`, made at the first step

    def step(self, lr_factor: float | list[float] = 1.0) -> None:
        """One AdamW step; `lr_factor` per segment (a schedule of its own each) or one for all."""
        beta1 = self.betas[0]
        factors = lr_factor if isinstance(lr_factor, list) else [lr_factor] * len(self.segments)
        calls, counters = self._kernel_calls()
        if self.fused:
            torch._foreach_add_(counters, 1)
        for segment, decay, (params, grads, avgs, sqs), steps in calls:
            _, lr, _, beta2 = self.segments[segment]
            lr = lr * factors[segment]
            if self.fused:
                torch._fused_adamw_(params, grads, avgs, sqs, [], steps, lr=lr, beta1=beta1, beta2=beta2,
                                    weight_decay=decay, eps=self.eps, amsgrad=False, maximize=False)
            else:
                # The functional form counts steps itself: give it copies, the shared count moves below.
                with torch.no_grad():
                    functional_adamw(params, grads, avgs, sqs, [], [s.clone() for s in steps], foreach=True, lr=lr,
                                     beta1=beta1, beta2=beta2, weight_decay=decay, eps=self.eps, amsgrad=False,
                                     maximize=False)
        if not self.fused:
            torch._foreach_add_(counters, 1)

    def _kernel_calls(self) -> tuple[list, list[torch.Tensor]]:
        """What each kernel call of a step updates: per segment and weight-decay group, (segment,
        decay, the lists of tensors, the step counters), and every counter. Made once: the
        slices along the stack are views of tensors that are only ever updated in place."""
        if self._calls is None:
            one, calls, start = len(self.segments) == 1, [], 0
            for segment, ((count, _, weight_decay, _), counters) in enumerate(zip(self.segments, self.steps)):
                rows = slice(start, start + count)
                start += count
                for g, members in enumerate(self._groups):
                    every = len(members) == len(self.params)  # no decay split, nothing frozen: the lists as they are
                    if one and every:
                        lists = (self.params, self.grads, self.exp_avgs, self.exp_avg_sqs)
                    else:  # slices along the stack: contiguous views, updated in place
                        lists = tuple([t[i][rows] for i in members] for t in (
                            self.params, self.grads, self.exp_avgs, self.exp_avg_sqs))
                    steps = counters if every else [counters[i] for i in members]
                    calls.append((segment, weight_decay if g == 0 else 0.0, lists, steps))
            self._calls = (calls, [c for counters in self.steps for c in counters])
        return self._calls

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
               segments: list[tuple[int, float, float, float]] | None = None,
               steps: list[list[torch.Tensor]] | None = None) -> StackedAdamW:
        """The optimizer of a smaller stack (`params`, the folds at `index`), state carried over.
        `steps`: the kept segments' counters (None: every segment started with the first)."""
        if steps is None:
            steps = [[s.clone() for s in self.steps[0]] for _ in (segments or [None])]
        smaller = StackedAdamW(params, self.lr, self.weight_decay, self.betas, self.eps, self.no_decay, segments,
                               self.frozen, steps)
        smaller.exp_avgs = [m[index] for m in self.exp_avgs]
        smaller.exp_avg_sqs = [v[index] for v in self.exp_avg_sqs]
        return smaller

    def grown(self, params: list[torch.Tensor], exp_avgs: list[torch.Tensor], exp_avg_sqs: list[torch.Tensor],
              segments: list[tuple[int, float, float, float]], steps: list[list[torch.Tensor]]) -> StackedAdamW:
        """The optimizer of a bigger stack (trials joined it): `exp_avgs`/`exp_avg_sqs` are this
        one's moments, padded to the new width and followed by zeros for the new positions."""
        bigger = StackedAdamW(params, self.lr, self.weight_decay, self.betas, self.eps, self.no_decay, segments,
                              self.frozen, steps)
        bigger.exp_avgs, bigger.exp_avg_sqs = exp_avgs, exp_avg_sqs
        return bigger


def new_steps(params: list[torch.Tensor]) -> list[torch.Tensor]:
    """A segment's step counters, one per tensor, at 0."""
    return [torch.zeros((), dtype=torch.float32, device=p.device) for p in params]

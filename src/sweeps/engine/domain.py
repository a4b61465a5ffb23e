"""Domain-adversarial training (DANN, Ganin et al. 2016), stacked like the rest of the engine.

With `Study(target_data=unlabeled rows of the deployment distribution)` and
`Space(adversarial=λ)`, every training step also feeds a batch of target rows through each
fold-model. A domain classifier (a small MLP per fold-model, on the last hidden layer)
learns to tell training rows from target rows, and a gradient-reversal layer between it and
the network sends the network the *negative* of its gradient, times λ: the hidden features
are pushed towards what the classifier cannot tell apart, while the output head still
learns the labels from the training rows only. λ ramps up as in the paper, λ·(2/(1+e^(-10p))-1)
with p the fraction of the training's steps done, so the classifier is trained before it is
fought. Validation stays on labeled training folds (README: what that can and cannot tell).

The engine's backward pass is written by hand (`model.py`), so the reversal is too: the
head's gradient with respect to the hidden features enters `StackedMLP.backward` as
`extra_dh`, already reversed and scaled. `tests/engine/test_domain.py` checks every gradient against
autograd with a `torch.autograd.Function` reversal layer.
"""

from __future__ import annotations

import functools
import math

import torch

from sweeps.data.folds import Folds
from sweeps.engine.config import NetConfig
from sweeps.engine.optim import StackedAdamW
from sweeps.engine.positions import Positions
from sweeps.engine.seeds import seeds_for


def ramp(progress: float) -> float:
    """DANN's schedule for the reversal's weight: 0 at the start, towards 1 at the end."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


HIDDEN = 64  # units of the domain classifier's hidden layer


class DomainHead:
    """A domain classifier per stack position: one hidden ReLU layer of `HIDDEN` units, one logit.

    A single logistic unit is too weak an adversary: the network learns to fool that one
    unit (its loss rises past log 2, the unit predicts the wrong domain) while the domains
    stay linearly separable to a fresh classifier. A hidden layer, as in the paper's domain
    regressors, keeps the adversary able to follow the features.
    """

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.params = params  # [w1 [k, width, H], b1 [k, 1, H], w2 [k, H, 1], b2 [k, 1, 1]]
        self.activation: torch.Tensor | None = None  # the hidden layer of the latest forward

    @classmethod
    def init(cls, seeds: list[int], width: int, device: torch.device | str) -> DomainHead:
        def linear(fan_in: int, fan_out: int, generator: torch.Generator) -> torch.Tensor:
            return (torch.rand(fan_in, fan_out, generator=generator) * 2 - 1) / math.sqrt(fan_in)  # as nn.Linear

        firsts, seconds = [], []
        for seed in seeds:  # each position's own seed
            generator = torch.Generator().manual_seed(seed)
            firsts.append(linear(width, HIDDEN, generator))
            seconds.append(linear(HIDDEN, 1, generator))
        k = len(seeds)
        return cls([torch.stack(firsts).to(device), torch.zeros(k, 1, HIDDEN, device=device),
                    torch.stack(seconds).to(device), torch.zeros(k, 1, 1, device=device)])

    def select(self, index: torch.Tensor) -> DomainHead:
        return DomainHead([p[index] for p in self.params])

    def forward(self, hidden: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
        """Logits `[k, rows, 1]` of the last hidden layer `[k, rows, width]` (`alpha`: dropout's rescale)."""
        w1, b1, w2, b2 = self.params
        self.activation = torch.baddbmm(b1, hidden, w1, alpha=alpha).relu_()
        return torch.baddbmm(b2, self.activation, w2)

    @staticmethod
    def loss_and_grad(logits: torch.Tensor, is_target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-position mean binary cross-entropy `[k]` and its gradient with respect to the logits."""
        rows = logits.shape[1]
        labels = is_target.expand_as(logits)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels, reduction="none").mean(dim=(1, 2))
        return loss, (torch.sigmoid(logits) - labels).div_(rows)

    def backward(self, hidden: torch.Tensor, d_logits: torch.Tensor, grads: list[torch.Tensor], reversal: float,
                 alpha: float = 1.0) -> torch.Tensor:
        """Write the classifier's gradients into `grads`; return the reversed gradient for the features.

        The classifier descends its loss; the network gets `-reversal` times the loss's
        gradient (the gradient-reversal layer), before dropout's rescale like any gradient
        there (`StackedMLP.backward`'s `extra_dh`).
        """
        w1, _, w2, _ = self.params
        a = self.activation
        torch.bmm(a.transpose(1, 2), d_logits, out=grads[2])
        torch.sum(d_logits, dim=1, keepdim=True, out=grads[3])
        dz = torch.ops.aten.threshold_backward(torch.bmm(d_logits, w2.transpose(1, 2)), a, 0.0)
        torch.baddbmm(grads[0], hidden.transpose(1, 2), dz, beta=0.0, alpha=alpha, out=grads[0])
        torch.sum(dz, dim=1, keepdim=True, out=grads[1])
        return torch.bmm(dz, w1.transpose(1, 2)).mul_(-reversal)


def domain_seeds(seed: int, fold_ids: list[int]) -> list[int]:
    return seeds_for(seed, fold_ids, "domain")


DOMAIN_LR = 1.0  # the domain classifier's learning rate relative to the trial's (the paper uses one rate)


class Adversary:
    """Domain-adversarial training in the loop: a domain classifier per stack position, its own
    AdamW (the trial's lr and beta2, no decay), and a batch of target rows per position and step.

    The loop calls it at fixed points: `epoch` (draw the target rows), `inputs` (the target
    rows ride along in the forward pass), `labelled` (the labels' loss is the training rows'
    alone), `step` (the classifier's step and the reversed gradient), `select` (positions left).
    """

    def __init__(self, folds: Folds, configs: list[NetConfig], seeds: list[int], positions: Positions, width: int,
                 total_steps: int) -> None:
        if folds.target_X is None:
            raise ValueError("train_trials: adversarial training needs folds made with target rows")
        self.folds, self.configs, self.positions = folds, configs, positions
        self.weight, self.total_steps, self.members = configs[0].adversarial, total_steps, configs[0].ensemble
        self.head = DomainHead.init([r for s in seeds for r in domain_seeds(s, folds.fold_ids)], width,
                                    folds.X_train.device)
        self.optimizer = StackedAdamW(self.head.params, DOMAIN_LR * configs[0].lr, 0.0,
                                      betas=(0.9, configs[0].beta2), no_decay=[True] * 4,
                                      segments=self._segments() if len(configs) > 1 else None)
        self.target_rngs = [torch.Generator().manual_seed(r) for s in seeds
                            for r in seeds_for(s, folds.fold_ids, "target rows")]
        self.order: torch.Tensor | None = None

    def _segments(self) -> list[tuple[int, float, float, float]]:
        return [(n, DOMAIN_LR * self.configs[t].lr, 0.0, self.configs[t].beta2) for t, n in self.positions.runs()]

    def epoch(self, steps: int, batch_size: int) -> None:
        """Each live position's target rows for the epoch, a batch's worth per step."""
        n_target = self.folds.target_X.shape[1]
        self.order = torch.stack([torch.randint(n_target, (steps * batch_size,), generator=self.target_rngs[p])
                                  for p in self.positions.live]).to(self.folds.X_train.device)

    def inputs(self, x: torch.Tensor, rows: slice, folds_now: torch.Tensor) -> torch.Tensor:
        """The batch `x` [positions, B, d] with B target rows after it, for the domain classifier."""
        target = self.folds.target_X[folds_now.unsqueeze(1), self.order[:, rows][:, :x.shape[1]]]
        return torch.cat([x, target], dim=1)

    def labelled(self, out: torch.Tensor, n_source: int) -> torch.Tensor:
        """The outputs of the training rows alone (each member's first half)."""
        live = out.shape[0]
        return out.view(live, self.members, 2 * n_source, -1)[:, :, :n_source].reshape(
            live, self.members * n_source, -1)

    def step(self, cache, model, grad_out: torch.Tensor, n_source: int, step_count: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier's step on this batch's hidden features: (the output gradient over
        training and target rows, the reversed gradient for the network's last hidden layer)."""
        reversal = self.weight * ramp(step_count / self.total_steps)
        extra_dh = domain_step(self.head, self.optimizer.grads, cache, model, self.members, n_source, reversal)
        return pad_target_rows(grad_out, self.members, n_source), extra_dh

    def select(self, kept: torch.Tensor) -> None:
        """Keep the positions at `kept` (the others left the stack)."""
        self.head = self.head.select(kept)
        self.optimizer = self.optimizer.select(self.head.params, kept, self._segments())
        self.order = None


def pad_target_rows(grad_out: torch.Tensor, members: int, n_source: int) -> torch.Tensor:
    """The output gradient over training and target rows: zero on the target rows (no labels)."""
    positions = grad_out.shape[0]
    full = grad_out.new_zeros(positions, members, 2 * n_source, grad_out.shape[-1])
    full[:, :, :n_source] = grad_out.view(positions, members, n_source, -1)
    return full.view(positions, members * 2 * n_source, -1)


def domain_step(head: DomainHead, grads: list[torch.Tensor], cache, model, members: int, n_source: int,
                reversal: float) -> torch.Tensor:
    """The domain classifier's gradients on a batch's hidden features, into `grads`; returns the
    reversed gradient for the network (`StackedMLP.backward`'s `extra_dh`)."""
    hidden = cache.activations[-1]  # [k, members * 2B, width]: each member's B training rows, then B target rows
    alpha = model.backward_scale(True)[0]  # dropout's rescale, as the output head applies it
    is_target = _domain_labels(n_source, members, hidden.device)
    _, d_logits = head.loss_and_grad(head.forward(hidden, alpha), is_target)
    return head.backward(hidden, d_logits, grads, reversal, alpha)


@functools.lru_cache(maxsize=8)
def _domain_labels(n_source: int, members: int, device: torch.device) -> torch.Tensor:
    """[1, members * 2B, 1]: 0 for each member's B training rows, 1 for its B target rows (built
    once per batch size, not every step)."""
    labels = torch.cat([torch.zeros(n_source), torch.ones(n_source)]).repeat(members)
    return labels.to(device).view(1, -1, 1)

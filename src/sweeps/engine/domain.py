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
`extra_dh`, already reversed and scaled. `tests/test_domain.py` checks every gradient against
autograd with a `torch.autograd.Function` reversal layer.
"""

from __future__ import annotations

import math

import torch

from sweeps.engine.model import seeds_for


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

"""The shared-weight ensemble (TabM-mini, Gorishniy et al. 2025), stacked over fold-models.

E members share the hidden layers; member e sees the input scaled by its own adapter r_e
(initialised to random ±1) and has its own output layer. Members train on the mean of
their losses; a fold-model predicts their mean (`combine`). In the stack, the first layer
runs every member in one matmul against `scaled_weight` (x ⊙ r_e @ W = x @ (r_e ⊙ W)), and
the rows of the hidden layers are member-major: member e's B rows are `e*B:(e+1)*B`.
"""

from __future__ import annotations

import math

import torch

from sweeps.engine.losses import log_softmax


def scaled_weight(weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Every member's first-layer weights `[k, D, E*width]` from the shared `[k, D, width]`
    and the adapters `[k, E, D]`: one matmul then runs all members without copying x E times."""
    k, d_in = weight.shape[:2]
    return (weight.unsqueeze(2) * scales.transpose(1, 2).unsqueeze(-1)).reshape(k, d_in, -1)


def member_major(z: torch.Tensor, members: int) -> torch.Tensor:
    """[k, B, E*width] -> [k, E*B, width], the layout of the shared layers and the heads."""
    k, batch = z.shape[:2]
    return z.view(k, batch, members, -1).transpose(1, 2).reshape(k, members * batch, -1)


def batch_major(dz: torch.Tensor, members: int) -> torch.Tensor:
    """[k, E*B, width] -> [k, B, E*width], back to the first layer's layout."""
    k, rows, width = dz.shape
    batch = rows // members
    return dz.view(k, members, batch, width).transpose(1, 2).reshape(k, batch, members * width)


def first_layer_grads(part: torch.Tensor, dz: torch.Tensor, weight: torch.Tensor, scales_t: torch.Tensor,
                      members: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For one block of input columns `part` [k, B, D]: the gradient of the shared weights' rows
    and of the adapters' columns, from `dz` [k, B, E*width].

    d/d(r_e ⊙ W) = x^T dz_e; the shared W gets the sum over members of r_e ⊙ that, and r_e
    the sum over units of W ⊙ that.
    """
    k, columns = part.shape[0], part.shape[2]
    width = weight.shape[2]
    g = torch.bmm(part.transpose(1, 2), dz).view(k, columns, members, width)
    return (g * scales_t.unsqueeze(-1)).sum(2), (g * weight.unsqueeze(2)).sum(-1)


def combine(out: torch.Tensor, members: int, classification: bool) -> torch.Tensor:
    """The fold-model's prediction from its members' outputs `[k, E*B, n_out]` -> `[k, B, n_out]`:
    log of the members' mean probability (classification), or their mean (regression)."""
    if members == 1:
        return out
    k, rows, n_out = out.shape
    out = out.view(k, members, rows // members, n_out)
    if classification:
        return _logsumexp_members(log_softmax(out)) - math.log(members)
    return out.mean(1)


def _logsumexp_members(log_p: torch.Tensor) -> torch.Tensor:
    """log Σ_e exp(log_p[:, e]) for `[k, E, B, C]`: the log of the members' summed probabilities."""
    top = log_p.amax(dim=1, keepdim=True)
    return (log_p - top).exp_().sum(dim=1).log_().add_(top.squeeze(1))

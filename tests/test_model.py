"""The stacked MLP: hand-written backward against autograd, dropout masks."""

from __future__ import annotations

import pytest
import torch

from sweeps.model import StackedMLP, _random_bytes, effective_dropout, loss_and_grad


def autograd_grads(model, x, y, classification, masks=(), scale=1.0):
    params = [p.clone().requires_grad_() for p in model.params]
    h = x
    depth = len(model.weights) - 1
    for layer in range(depth + 1):
        h = torch.baddbmm(params[2 * layer + 1], h, params[2 * layer])
        if layer < depth:
            h = h.relu()
            if masks:
                h = h * masks[layer] * scale
    if classification:
        k, b, c = h.shape
        loss = torch.nn.functional.cross_entropy(h.reshape(-1, c), y.reshape(-1), reduction="none")
        loss = loss.reshape(k, b).mean(1).sum()
    else:
        loss = (h.squeeze(-1) - y).square().mean(1).sum()
    loss.backward()
    return [p.grad for p in params]


@pytest.mark.parametrize("classification", [True, False])
def test_backward_matches_autograd(classification):
    gen = torch.Generator().manual_seed(0)
    model = StackedMLP.init([1, 2, 3], n_in=7, n_out=4 if classification else 1, depth=3, width=16)
    x = torch.randn(3, 50, 7, generator=gen)
    y = torch.randint(0, 4, (3, 50), generator=gen) if classification else torch.randn(3, 50, generator=gen)
    out, activations = model.forward(x)
    _, grad_out = loss_and_grad(out, y, classification)
    grads = [torch.zeros_like(p) for p in model.params]
    model.backward(activations, grad_out, grads)
    for ours, reference in zip(grads, autograd_grads(model, x, y, classification)):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_backward_with_dropout_matches_autograd_with_the_same_masks():
    model = StackedMLP.init([5, 6], n_in=7, n_out=3, depth=2, width=32, dropout=0.25)
    x = torch.randn(2, 40, 7)
    y = torch.randint(0, 3, (2, 40))
    out, activations = model.forward(x, dropout_rng=torch.Generator().manual_seed(1))
    # Recover the masks the forward pass drew: a unit was dropped where its activation is 0
    # although its pre-activation (recomputed without dropout) was positive.
    masks = [(a != 0).float() for a in activations[1:]]
    _, grad_out = loss_and_grad(out, y, True)
    grads = [torch.zeros_like(p) for p in model.params]
    model.backward(activations, grad_out, grads)
    scale = 1 / (1 - effective_dropout(0.25))
    for ours, reference in zip(grads, autograd_grads(model, x, y, True, masks, scale)):
        torch.testing.assert_close(ours, reference, rtol=1e-5, atol=1e-6)


def test_dropout_drops_the_requested_fraction():
    bytes_ = _random_bytes(torch.Size([1000, 1000]), torch.Generator().manual_seed(0))
    for p in (0.1, 0.3, 0.5):
        threshold = round(p * 256)
        dropped = (bytes_ < threshold).float().mean().item()
        assert abs(dropped - effective_dropout(p)) < 0.003
        assert abs(effective_dropout(p) - p) <= 1 / 512


def test_init_is_per_fold_and_reproducible():
    a = StackedMLP.init([11, 12], n_in=4, n_out=2, depth=1, width=8)
    b = StackedMLP.init([12], n_in=4, n_out=2, depth=1, width=8)
    torch.testing.assert_close(a.weights[0][1], b.weights[0][0])
    assert a.n_params == 4 * 8 + 8 + 8 * 2 + 2

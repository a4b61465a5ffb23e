"""The direct fused AdamW does what torch.optim.AdamW does."""

from __future__ import annotations

import torch

from sweeps.optim import StackedAdamW


def test_matches_torch_adamw():
    gen = torch.Generator().manual_seed(0)
    ours = [torch.randn(3, 5, 4, generator=gen), torch.randn(3, 1, 4, generator=gen)]
    theirs = [p.clone().requires_grad_() for p in ours]
    optimizer = StackedAdamW(ours, lr=1e-2, weight_decay=1e-2)
    reference = torch.optim.AdamW(theirs, lr=1e-2, weight_decay=1e-2)
    for _ in range(20):
        grads = [torch.randn(p.shape, generator=gen) for p in ours]
        for buffer, g in zip(optimizer.grads, grads):
            buffer.copy_(g)
        for p, g in zip(theirs, grads):
            p.grad = g.clone()
        optimizer.step()
        reference.step()
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b.detach(), rtol=1e-5, atol=1e-6)


def test_fallback_path_matches_fused():
    gen = torch.Generator().manual_seed(1)
    start = [torch.randn(2, 3, 3, generator=gen)]
    fused = StackedAdamW([start[0].clone()], lr=1e-2, weight_decay=1e-3)
    plain = StackedAdamW([start[0].clone()], lr=1e-2, weight_decay=1e-3)
    plain.fused = False
    for _ in range(10):
        g = torch.randn(2, 3, 3, generator=gen)
        fused.grads[0].copy_(g)
        plain.grads[0].copy_(g)
        fused.step()
        plain.step()
    torch.testing.assert_close(fused.params[0], plain.params[0], rtol=1e-5, atol=1e-6)

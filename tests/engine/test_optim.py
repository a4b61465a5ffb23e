"""The direct fused AdamW does what torch.optim.AdamW does."""

from __future__ import annotations

import pytest
import torch

from sweeps.engine.optim import StackedAdamW, lr_factor


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


def test_cosine_schedule_is_torchs_linear_warmup_then_cosine_annealing():
    total = 200
    warmup = 10  # 5 % of the steps
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=1.0)
    scheduler = torch.optim.lr_scheduler.SequentialLR(optimizer, [
        torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1 / warmup, total_iters=warmup - 1),
        torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total - warmup)], milestones=[warmup])
    for step in range(total):
        assert lr_factor("cosine", step, total) == pytest.approx(optimizer.param_groups[0]["lr"], abs=1e-9)
        optimizer.step()
        scheduler.step()
    assert lr_factor("constant", 123, total) == 1.0
    assert lr_factor("cosine", total + 50, total) == pytest.approx(0.0)  # past the horizon: stays at 0


def test_clipping_is_per_fold_model_as_torchs_clip_grad_norm():
    params = [torch.randn(3, 4, 5), torch.randn(3, 1, 5)]
    optimizer = StackedAdamW(params, lr=1e-3, weight_decay=0.0)
    for g in optimizer.grads:
        g.normal_()
    optimizer.grads[0][1].mul_(1e-3)  # fold 1 is below the limit: untouched
    expected = []
    for fold in range(3):
        tensors = [torch.nn.Parameter(p[fold].clone()) for p in params]
        for t, g in zip(tensors, optimizer.grads):
            t.grad = g[fold].clone()
        torch.nn.utils.clip_grad_norm_(tensors, max_norm=1.0)
        expected.append([t.grad for t in tensors])
    optimizer.clip(1.0)
    for fold in range(3):
        for ours, theirs in zip(optimizer.grads, expected[fold]):
            torch.testing.assert_close(ours[fold], theirs, rtol=1e-5, atol=1e-7)


def test_no_decay_tensors_keep_their_values_under_weight_decay():
    params = [torch.ones(2, 3), torch.ones(2, 3)]
    optimizer = StackedAdamW(params, lr=0.1, weight_decay=0.5, no_decay=[False, True])
    optimizer.step()  # zero gradients: only weight decay moves a tensor
    assert (params[0] < 1).all() and (params[1] == 1).all()


def test_frozen_tensors_neither_step_nor_count_in_the_clipping_norm():
    params = [torch.ones(2, 3), torch.ones(2, 3), torch.ones(2, 3)]
    optimizer = StackedAdamW(params, lr=0.1, weight_decay=0.5, frozen=[True, False, False],
                             no_decay=[False, False, True])
    for g in optimizer.grads:
        g.fill_(1.0)
    optimizer.grads[0].fill_(100.0)  # a huge gradient on the frozen tensor...
    optimizer.clip(10.0)
    torch.testing.assert_close(optimizer.grads[1], torch.ones(2, 3))  # ...does not shrink the others' (norm sqrt 6)
    optimizer.step()
    assert (params[0] == 1).all()  # frozen: no step, no decay
    assert (params[1] < 1).all() and (params[2] < 1).all()  # the others step (and decay where they may)


def test_gradient_clipping_measures_the_trained_tensors_alone():
    # A frozen layer (feature extraction) is neither stepped nor counted in the norm that
    # clipping limits: its gradient, however large, must not shrink the trained layers' steps.
    frozen, trained = torch.zeros(2, 4, 4), torch.zeros(2, 3)
    optimizer = StackedAdamW([frozen, trained], lr=1e-2, weight_decay=0.0, frozen=[True, False])
    optimizer.grads[0].fill_(100.0)  # a norm of 400 per fold-model
    optimizer.grads[1].copy_(torch.tensor([[0.3, 0.0, 0.4], [3.0, 0.0, 4.0]]))  # norms 0.5 and 5
    optimizer.clip(1.0)
    torch.testing.assert_close(optimizer.grads[1], torch.tensor([[0.3, 0.0, 0.4], [0.6, 0.0, 0.8]]),
                               rtol=0, atol=1e-5)  # under the limit: as it was; over: scaled to norm 1


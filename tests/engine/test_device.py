"""The training step off the CPU, for shapes and devices: no GPU is lent to this project, so the
path a CUDA device takes (the fused AdamW kernel, every tensor made on the stack's device)
runs on PyTorch's `meta` device, which computes shapes and no values, under a check of CUDA's
rule that an operation's tensors share one device (0-dim CPU tensors excepted): the meta
device alone lets some CPU operands through."""

from __future__ import annotations

import pytest
import torch
from torch.utils import _pytree
from torch.utils._python_dispatch import TorchDispatchMode

from sweeps.engine.losses import loss_and_grad
from sweeps.engine.model import StackedMLP
from sweeps.engine.optim import StackedAdamW

META = torch.device("meta")


class OneDevice(TorchDispatchMode):
    """Every operation's tensors on one device, as CUDA requires (a 0-dim CPU tensor is a scalar)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        devices = {t.device for t in _pytree.tree_leaves((args, kwargs))
                   if isinstance(t, torch.Tensor) and not (t.device.type == "cpu" and t.dim() == 0)}
        assert len(devices) <= 1, f"{func}: tensors on {sorted(map(str, devices))}"
        return func(*args, **kwargs)


@pytest.mark.parametrize("classification", [True, False])
@pytest.mark.parametrize("embedding, members, categories", [
    (None, 1, None), ((8, 0.7, 4), 1, None), (None, 3, None), ((8, 0.7, 4), 2, ([[(0, 3), (3, 2)]] * 4, 3))])
def test_a_training_step_keeps_every_tensor_on_the_stacks_device_with_its_shape(classification, embedding,
                                                                                 members, categories):
    k, rows, n_in, n_out = 4, 32, 9, 3 if classification else 1
    model = StackedMLP.init(list(range(k)), n_in=n_in, n_out=n_out, depth=2, width=16, device=META, n_numeric=4,
                            embedding=embedding, members=members, categories=categories)
    assert all(p.device == META for p in model.params)
    with OneDevice():
        _step(model, k, rows, n_in, n_out, members, classification)


def _step(model: StackedMLP, k: int, rows: int, n_in: int, n_out: int, members: int, classification: bool) -> None:
    x = torch.empty(k, rows, n_in, device=META)
    y = torch.empty(k, rows * members, dtype=torch.long if classification else torch.float32, device=META)
    out, cache = model.forward(x)
    assert out.shape == (k, members * rows, n_out) and out.device == META
    # settings per stack position, as trials trained together have them
    per_position = torch.zeros(k, device=META)
    loss, grad_out = loss_and_grad(out, y, classification, label_smoothing=per_position, huber=per_position,
                                   row_weight=torch.empty(k, rows * members, device=META))
    assert loss.shape == (k,) and grad_out.shape == out.shape and grad_out.device == META
    optimizer = StackedAdamW(model.params, 1e-3, 1e-4, no_decay=model.no_decay,
                             segments=[(2, 1e-3, 1e-4, 0.95), (2, 3e-3, 0.0, 0.999)])
    optimizer.fused = True  # what CUDA runs; the meta device has the kernel's shapes
    model.backward(cache, grad_out, optimizer.grads)
    optimizer.clip(torch.ones(k, device=META))
    optimizer.step([1.0, 0.5])
    for tensors in (optimizer.grads, optimizer.exp_avgs, optimizer.exp_avg_sqs, model.params):
        assert [t.shape for t in tensors] == [p.shape for p in model.params]
        assert all(t.device == META for t in tensors)
    assert all(s.device == META for counters in optimizer.steps for s in counters)  # the fused kernel's own rule
    predictions = model.predict(torch.empty(k, 100, n_in, device=META), 64, classification)
    assert predictions.shape == (k, 100, n_out) and predictions.device == META

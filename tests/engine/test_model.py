"""The stacked MLP: hand-written backward against autograd, dropout masks."""

from __future__ import annotations

import pytest
import torch

from sweeps.engine.dropout import _random_bytes, effective_dropout
from sweeps.engine.losses import loss_and_grad
from sweeps.engine.model import StackedMLP


def autograd_grads(model, x, y, classification, masks=(), scale=1.0):
    params = [p.clone().requires_grad_() for p in model.params]
    h = x
    depth = len(model.weights) - 1
    for layer in range(depth + 1):
        w, b = params[2 * layer], params[2 * layer + 1]
        if layer == depth:  # the output layer of the single member: [k, 1, width, out]
            w, b = w[:, 0], b[:, 0]
        h = torch.baddbmm(b, h, w)
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


# --- the recipe's layers: periodic embeddings and shared-weight members ---------------------------
def reference_forward(params, model, x, dropout_masks=None, scale=1.0):
    """The same network with autograd, written from its definition (module docstring)."""
    params = list(params)
    h = x
    if model.embedding is not None:
        c, w_e, b_e = params.pop(0), params.pop(0), params.pop(0)
        F = c.shape[1]
        z = 2 * torch.pi * x[..., :F, None] * c[:, None]  # [k, B, F, n]
        u = torch.cat([torch.cos(z), torch.sin(z)], -1)
        e = torch.relu(torch.einsum("kbfi,kfid->kbfd", u, w_e) + b_e.squeeze(2)[:, None])
        h = torch.cat([e.flatten(2), x[..., F:]], -1)
    if model.categories is not None:  # the masked weight: zero outside each column's block, and stays so
        w_c, mask = params.pop(0), params.pop(0)
        split = x.shape[2] - model.categories.width
        numeric = h[..., :h.shape[2] - model.categories.width] if model.embedding is not None else x[..., :split]
        h = torch.cat([numeric, x[..., split:] @ (w_c * mask.detach())], -1)
    if model.scales is not None:
        r = params.pop(0)
        h = h[:, None] * r[:, :, None]  # [k, E, B, D]
    else:
        h = h[:, None]
    weights, biases = params[0::2], params[1::2]
    for layer, (w, b) in enumerate(zip(weights[:-1], biases[:-1])):
        h = torch.relu(h @ w[:, None] + b[:, None])
        if dropout_masks is not None:
            h = h * dropout_masks[layer].view(h.shape) * scale
    return h @ weights[-1] + biases[-1]  # [k, E, B, out]


def reference_loss(out, y, classification, smoothing=0.0):
    k, E, B, C = out.shape
    if classification:
        loss = torch.nn.functional.cross_entropy(out.reshape(-1, C), y[:, None].expand(k, E, B).reshape(-1),
                                                 reduction="none", label_smoothing=smoothing)
    else:
        loss = (out.squeeze(-1) - y[:, None]).square()
    return loss.reshape(k, E * B).mean(1).sum()


@pytest.mark.parametrize("classification", [True, False])
@pytest.mark.parametrize("embedding, members", [((6, 0.7, 5), 1), (None, 4), ((6, 0.7, 5), 3)])
def test_embeddings_and_members_backward_match_autograd(classification, embedding, members):
    gen = torch.Generator().manual_seed(0)
    n_out = 4 if classification else 1
    model = StackedMLP.init([1, 2, 3], n_in=9, n_out=n_out, depth=2, width=16, n_numeric=5,
                            embedding=embedding, members=members)
    x = torch.randn(3, 30, 9, generator=gen)
    x[..., 5:] = (x[..., 5:] > 0).float()  # the one-hot part
    y = torch.randint(0, 4, (3, 30), generator=gen) if classification else torch.randn(3, 30, generator=gen)
    out, cache = model.forward(x)
    _, grad_out = loss_and_grad(out, y.repeat(1, members), classification, label_smoothing=0.1)
    grads = [torch.zeros_like(p) for p in model.params]
    model.backward(cache, grad_out, grads)
    params = [p.clone().requires_grad_() for p in model.params]
    reference = reference_forward(params, model, x)
    torch.testing.assert_close(out.view(3, members, 30, n_out), reference.detach(), rtol=1e-5, atol=1e-5)
    reference_loss(reference, y, classification, 0.1 if classification else 0.0).backward()
    for ours, p in zip(grads, params):
        torch.testing.assert_close(ours, p.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("classification", [True, False])
@pytest.mark.parametrize("embedding, members", [(None, 1), ((6, 0.7, 5), 1), (None, 3), ((6, 0.7, 5), 2)])
def test_category_embeddings_backward_match_autograd(classification, embedding, members):
    gen = torch.Generator().manual_seed(2)
    n_out = 3 if classification else 1
    # Two folds with different kept categories: columns of 3 and 2 one-hot columns, then 2 and 3.
    blocks = [[(0, 3), (3, 2)], [(0, 2), (2, 3)]]
    model = StackedMLP.init([4, 5], n_in=9, n_out=n_out, depth=2, width=12, n_numeric=4, embedding=embedding,
                            members=members, categories=(blocks, 3))
    assert model.n_inputs == 9 and model.categories.out == 6
    x = torch.randn(2, 25, 9, generator=gen)
    one_hot = torch.zeros(2, 25, 5)
    for f, fold_blocks in enumerate(blocks):
        for start, count in fold_blocks:
            picks = torch.randint(start, start + count, (25,), generator=gen)
            one_hot[f, torch.arange(25), picks] = 1.0
    x[..., 4:] = one_hot
    y = torch.randint(0, 3, (2, 25), generator=gen) if classification else torch.randn(2, 25, generator=gen)
    out, cache = model.forward(x)
    _, grad_out = loss_and_grad(out, y.repeat(1, members), classification)
    grads = [torch.zeros_like(p) for p in model.params]
    model.backward(cache, grad_out, grads)
    params = [p.clone().requires_grad_() for p in model.params]
    reference = reference_forward(params, model, x)
    torch.testing.assert_close(out.view(2, members, 25, n_out), reference.detach(), rtol=1e-5, atol=1e-5)
    reference_loss(reference, y, classification).backward()
    roles = model._roles()
    for ours, p, role in zip(grads, params, roles):
        if role == "category_mask":  # never trained: no gradient at all
            assert not ours.any()
            continue
        torch.testing.assert_close(ours, p.grad, rtol=1e-4, atol=1e-5)
    category = grads[roles.index("category")]
    assert not (category * (1 - model.categories.mask)).any()  # nothing leaks outside a column's block


def test_category_embeddings_survive_state_and_select():
    model = StackedMLP.init([1, 2, 3], n_in=7, n_out=2, depth=1, width=8, n_numeric=2,
                            categories=([[(0, 2), (2, 3)]] * 3, 4))
    meta, tensors = model.state()
    again = StackedMLP.from_state(meta, tensors)
    x = torch.randn(3, 10, 7)
    torch.testing.assert_close(again.forward(x)[0], model.forward(x)[0])
    one = model.select(torch.tensor([1]))
    torch.testing.assert_close(one.forward(x[1:2])[0], model.forward(x)[0][1:2])
    # a category's vector is d numbers, counted once: 5 categories x 4, not the [5, 2*4] block of zeros
    assert model.n_params == (2 + 2 * 4) * 8 + 8 + 8 * 2 + 2 + 5 * 4


def test_members_with_dropout_match_autograd_with_the_same_masks():
    model = StackedMLP.init([5, 6], n_in=7, n_out=3, depth=2, width=32, dropout=0.25, members=3)
    x = torch.randn(2, 20, 7)
    y = torch.randint(0, 3, (2, 20))
    out, cache = model.forward(x, dropout_rng=torch.Generator().manual_seed(1))
    masks = [(a != 0).float() for a in cache.activations[1:]]
    _, grad_out = loss_and_grad(out, y.repeat(1, 3), True)
    grads = [torch.zeros_like(p) for p in model.params]
    model.backward(cache, grad_out, grads)
    params = [p.clone().requires_grad_() for p in model.params]
    reference_loss(reference_forward(params, model, x, masks, 1 / (1 - effective_dropout(0.25))), y, True).backward()
    for ours, p in zip(grads, params):
        torch.testing.assert_close(ours, p.grad, rtol=1e-4, atol=1e-5)


def test_periodic_embeddings_match_the_reference_package():
    rtdl = pytest.importorskip("rtdl_num_embeddings")
    model = StackedMLP.init([4], n_in=6, n_out=2, depth=1, width=8, n_numeric=6, embedding=(12, 0.5, 7))
    reference = rtdl.PeriodicEmbeddings(6, d_embedding=7, n_frequencies=12, frequency_init_scale=0.5, lite=False)
    with torch.no_grad():  # the same weights in both
        reference.periodic.weight.copy_(model.embedding.frequencies[0])
        reference.linear.weight.copy_(model.embedding.weight[0])
        reference.linear.bias.copy_(model.embedding.bias[0, :, 0])
    x = torch.randn(1, 40, 6)
    _, cache = model.forward(x)
    ours = cache.inputs[0][0]  # the first layer's input: the embedded features, flattened
    torch.testing.assert_close(ours, reference(x[0]).flatten(1), rtol=1e-5, atol=1e-5)
    # and the initial frequencies follow the package's N(0, 0.5²) truncated at ±3σ
    big = StackedMLP.init([0], n_in=200, n_out=1, depth=1, width=4, n_numeric=200, embedding=(50, 0.5, 2))
    f = big.embedding.frequencies
    assert f.abs().max() <= 1.5 and abs(f.std().item() - 0.5 * 0.986) < 0.02  # truncation shrinks the std


def test_the_embedded_columns_reach_the_first_layer_without_a_copy():
    # The speed rule of engine/embeddings.py: the per-column maps are computed rows last
    # ([k*F, d, B], a product with B output columns; with d output columns CPU kernels run
    # several times slower), and the first layer reads that memory as its input transposed.
    # A layout that gathers the embedded columns into [k, B, F*d] again adds a copy per step.
    model = StackedMLP.init([1, 2], n_in=7, n_out=2, depth=1, width=8, n_numeric=5, embedding=(4, 0.5, 3))
    x = torch.randn(2, 32, 7)
    _, cache = model.forward(x)
    flat, rest = cache.inputs
    assert flat.shape == (2, 32, 5 * 3) and rest.shape == (2, 32, 2)
    assert cache.embedded.shape == (2 * 5, 3, 32) and cache.trig.shape == (2 * 5, 2 * 4, 32)
    assert flat.data_ptr() == cache.embedded.data_ptr()  # the same memory, read transposed


def test_predictions_of_a_wide_embedding_come_in_chunks_within_the_memory_budget(monkeypatch):
    # A chunk of 65,536 rows through 5 fold-models with embeddings on 32 columns held 2 GB at
    # once; predict sizes its chunks by what a forward pass holds (`rows_within`).
    from sweeps.engine import model as model_module
    model = StackedMLP.init([0, 1, 2], n_in=34, n_out=2, depth=2, width=16, n_numeric=32, embedding=(16, 0.5, 16))
    x = torch.randn(3, 5000, 34)
    whole = model.combine(model.forward(x)[0], True)
    seen = []
    forward = StackedMLP.forward
    monkeypatch.setattr(StackedMLP, "forward", lambda self, x, *a: seen.append(x.shape[1]) or forward(self, x, *a))
    monkeypatch.setattr(model_module, "PREDICT_BYTES", 4 * 2**20, raising=False)
    out = model.predict(x)
    # per row: 34 inputs, the first layer's 32*16 embedded + 2 other, 2 hidden layers of 16, and
    # 32*32 cos and sin, for 3 folds
    per_row = 4 * 3 * (34 + 32 * 16 + 2 + 2 * 16 + 32 * 32)
    assert max(seen) == 4 * 2**20 // per_row and sum(seen) == 5000
    torch.testing.assert_close(out, whole, rtol=1e-5, atol=1e-5)
    seen.clear()
    model.predict(x, chunk=100)  # a smaller chunk asked for is kept
    assert max(seen) == 100


def test_combined_prediction_is_the_members_mean():
    model = StackedMLP.init([3], n_in=5, n_out=3, depth=1, width=8, members=4)
    x = torch.randn(1, 10, 5)
    out, _ = model.forward(x)
    probabilities = torch.softmax(out.view(1, 4, 10, 3), -1).mean(1)
    torch.testing.assert_close(model.predict(x).exp(), probabilities, rtol=1e-5, atol=1e-6)
    regression = StackedMLP.init([3], n_in=5, n_out=1, depth=1, width=8, members=4)
    out, _ = regression.forward(x)
    torch.testing.assert_close(regression.predict(x, classification=False), out.view(1, 4, 10, 1).mean(1))


def test_a_plain_net_is_initialised_as_in_sweeps_0_1():
    # sweeps 0.1 drew, per fold, weight then bias of each layer from one generator
    model = StackedMLP.init([7], n_in=5, n_out=2, depth=2, width=8)
    generator = torch.Generator().manual_seed(7)
    for w, b in zip(model.weights, model.biases):
        expected_w = torch.empty(w.shape[-2:]).uniform_(-1 / w.shape[-2] ** 0.5, 1 / w.shape[-2] ** 0.5,
                                                        generator=generator)
        expected_b = torch.empty(b.shape[-1]).uniform_(-1 / w.shape[-2] ** 0.5, 1 / w.shape[-2] ** 0.5,
                                                       generator=generator)
        torch.testing.assert_close(w.reshape(w.shape[-2:]), expected_w)
        torch.testing.assert_close(b.reshape(-1), expected_b)


@pytest.mark.parametrize("weighted", [False, True])
def test_the_huber_gradient_is_twice_torchs_huber_loss_and_the_value_stays_squared_error(weighted):
    gen = torch.Generator().manual_seed(3)
    out, y = torch.randn(3, 40, 1, generator=gen) * 2, torch.randn(3, 40, generator=gen)
    w = torch.rand(3, 40, generator=gen) + 0.5 if weighted else None
    deltas = torch.tensor([0.5, 0.0, 1.5])  # one per position: 0 is squared error
    loss_sum, grad = loss_and_grad(out.clone(), y, False, row_weight=w, huber=deltas)
    squared_sum, _ = loss_and_grad(out.clone(), y, False, row_weight=w)
    torch.testing.assert_close(loss_sum, squared_sum)  # what the trial reports: squared error
    assert ((out.squeeze(-1) - y).abs() > 0.5).any()  # the thresholds do bite
    for f, delta in enumerate(deltas.tolist()):
        o = out[f].clone().requires_grad_()
        loss = (torch.nn.functional.huber_loss(o.squeeze(-1), y[f], reduction="none", delta=delta) * 2 if delta
                else (o.squeeze(-1) - y[f]).square())
        (loss.mean() if w is None else (loss * w[f]).sum() / w[f].sum()).backward()
        torch.testing.assert_close(grad[f], o.grad, rtol=1e-5, atol=1e-7)
    single = loss_and_grad(out.clone(), y, False, row_weight=w, huber=0.5)[1]
    torch.testing.assert_close(single[0], grad[0])  # a float threshold acts as the same one everywhere

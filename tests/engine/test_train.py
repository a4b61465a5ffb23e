"""The training engine: it learns, folds are independent, early stopping and divergence."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sweeps.engine.config import NetConfig
from sweeps.engine.train import train_folds


def test_it_learns_digits(digits_folds):
    result = train_folds(digits_folds, NetConfig(1, 64, 0.1, 1e-4, 3e-3), max_epochs=15, patience=5, seed=0)
    assert np.mean(result.metrics) > 0.93  # ~0.96 here; a linear model reaches ~0.95
    assert result.cv_loss < 0.3
    assert len(result.val_losses) == len(result.best_epochs) == 3
    assert all(t < v for t, v in zip(result.train_losses, result.val_losses))


RECIPE = dict(embedding="periodic", n_frequencies=8, frequency_scale=0.3, embedding_dim=6, ensemble=3,
              label_smoothing=0.1, beta2=0.95, schedule="cosine", grad_clip=1.0)


@pytest.mark.parametrize("options", [{}, RECIPE, {"resampling": "under"}], ids=["plain", "recipe", "resampled"])
def test_a_fold_trains_the_same_inside_the_stack_and_alone(digits_folds, options):
    config = NetConfig(2, 32, 0.0, 1e-3, 3e-3, batch_size=64, **options)
    stacked = train_folds(digits_folds, config, max_epochs=6, patience=None, seed=7)
    alone = train_folds(digits_folds.select([1]), config, max_epochs=6, patience=None, seed=7)
    for w_stack, w_alone in zip(stacked.model.params, alone.model.params):
        torch.testing.assert_close(w_stack[1], w_alone[0], rtol=1e-4, atol=1e-5)
    assert math.isclose(stacked.val_losses[1], alone.val_losses[0], rel_tol=1e-4)


def test_the_recipe_learns_and_its_value_is_the_unsmoothed_loss_of_the_members_mean(digits_folds):
    config = NetConfig(1, 64, 0.1, 1e-4, 3e-3, **RECIPE)
    result = train_folds(digits_folds, config, max_epochs=15, patience=5, seed=0)
    assert np.mean(result.metrics) > 0.93
    model, f = result.model, 0
    x, y, w = digits_folds.X_val[f:f + 1], digits_folds.y_val[f:f + 1], digits_folds.val_weight[f:f + 1]
    mean_probability = torch.softmax(model.select(torch.tensor([f])).forward(x)[0].view(1, 3, -1, 10), -1).mean(1)
    expected = -(torch.log(mean_probability.gather(-1, y.unsqueeze(-1))).squeeze(-1) * w).sum() / w.sum()
    assert result.val_losses[f] == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("options", [dict(label_smoothing=0.3), dict(resampling="under")],
                         ids=["smoothing", "resampling"])
def test_every_epochs_validation_value_is_the_plain_loss_on_every_validation_row(digits_folds, options):
    # What the pruner and the curves see each epoch is what the trial is scored by: unsmoothed,
    # on all the validation rows (never a re-sampled draw), not only the final value.
    seen = []
    config = NetConfig(1, 32, 0.0, 1e-4, 3e-3, batch_size=64, **options)
    result = train_folds(digits_folds, config, max_epochs=1, patience=None, seed=2,
                         on_epoch=lambda epoch, value, folds: seen.append(value))
    model = result.model
    for f in range(digits_folds.k):
        x, y, w = digits_folds.X_val[f:f + 1], digits_folds.y_val[f:f + 1], digits_folds.val_weight[f:f + 1]
        losses = torch.nn.functional.cross_entropy(model.select(torch.tensor([f])).forward(x)[0][0], y[0],
                                                   reduction="none")
        assert result.val_losses[f] == pytest.approx(float((losses * w[0]).sum() / w[0].sum()), rel=1e-5)
    assert seen == pytest.approx([float(np.mean(result.val_losses))], rel=1e-6)
    assert result.curve_val == pytest.approx(seen, rel=1e-6)


def test_removing_stopped_folds_changes_nothing_but_the_cost(digits_folds):
    # Patience 1 stops folds at different epochs; without dropout both paths are exact.
    config = NetConfig(1, 32, 0.0, 1e-4, 3e-2)
    compact = train_folds(digits_folds, config, max_epochs=30, patience=1, seed=3, compact=True)
    masked = train_folds(digits_folds, config, max_epochs=30, patience=1, seed=3, compact=False)
    assert len(set(compact.best_epochs)) > 1  # the folds did stop at different epochs
    assert compact.best_epochs == masked.best_epochs
    np.testing.assert_allclose(compact.val_losses, masked.val_losses, rtol=1e-4)


def test_early_stopping_keeps_each_folds_best_epoch(digits_folds):
    result = train_folds(digits_folds, NetConfig(1, 32, 0.0, 0.0, 3e-2), max_epochs=40, patience=3, seed=1)
    assert max(result.best_epochs) < 40
    assert all("early stop" in reason for reason in result.stop_reasons)
    # The reported value is the mean of best-so-far losses: never increasing, ends at the CV loss.
    assert all(b <= a + 1e-12 for a, b in zip(result.reported, result.reported[1:]))
    assert math.isclose(result.reported[-1], result.cv_loss, rel_tol=1e-5)


def diabetes_folds():
    from sklearn.datasets import load_diabetes

    from sweeps.data.dataset import load_dataset
    from sweeps.data.folds import make_folds

    from conftest import digits_study

    dataset = load_dataset(digits_study(task="regression", data=lambda: load_diabetes(return_X_y=True)))
    return make_folds(dataset, folds=3, seed=0)


def test_divergence_is_caught_and_named():
    # An absurd learning rate makes the squared error overflow to inf, then NaN.
    result = train_folds(diabetes_folds(), NetConfig(3, 64, 0.0, 0.0, 1e10), max_epochs=10, patience=5, seed=0)
    assert result.diverged == "diverged: the loss of fold 0 became non-finite at epoch 1"


def test_hook_can_end_training(digits_folds):
    seen = []

    def hook(epoch, value, fold_losses):
        seen.append((epoch, value))
        return "stop here" if epoch == 2 else None

    result = train_folds(digits_folds, NetConfig(1, 16, 0.0, 0.0, 1e-3), max_epochs=10, patience=5,
                         seed=0, on_epoch=hook)
    assert result.interrupted == "stop here" and [e for e, _ in seen] == [1, 2]


def test_regression_learns():
    result = train_folds(diabetes_folds(), NetConfig(1, 32, 0.0, 1e-4, 1e-2, batch_size=32), max_epochs=60,
                         patience=10, seed=0)
    assert result.cv_loss < 0.65  # standardized MSE ~ 1 - R^2; ridge reaches ~0.52
    assert 40 < np.mean(result.metrics) < 70  # RMSE in the target's units (std ~77)


def test_trials_trained_in_one_stack_train_as_they_would_alone(digits_folds):
    from sweeps.engine.train import train_trials

    configs = [
        NetConfig(2, 32, 0.0, 1e-4, 3e-3, batch_size=64),
        NetConfig(2, 48, 0.25, 1e-3, 1e-2, batch_size=64, label_smoothing=0.1, beta2=0.95, schedule="cosine"),
        NetConfig(2, 16, 0.1, 0.0, 5e-3, batch_size=64, noise=0.2, grad_clip=1.0, class_weight="balanced"),
    ]
    seeds = [11, 12, 13]
    stops = []

    def prune_second_at_3(epoch, value, folds):  # the second trial is pruned: the others go on unchanged
        stops.append(epoch)
        return "pruned here" if epoch == 3 else None

    hooks = [None, prune_second_at_3, None]
    together = train_trials(digits_folds, configs, seeds, hooks, max_epochs=6, patience=3)
    for config, seed, hook, grouped in zip(configs, seeds, hooks, together):
        alone = train_trials(digits_folds, [config], [seed], [hook], max_epochs=6, patience=3)[0]
        assert grouped.best_epochs == alone.best_epochs and grouped.interrupted == alone.interrupted
        np.testing.assert_allclose(grouped.val_losses, alone.val_losses, rtol=1e-4)
        np.testing.assert_allclose(grouped.curve_train, alone.curve_train, rtol=1e-4)
        for w_group, w_alone in zip(grouped.model.params, alone.model.params):
            assert w_group.shape == w_alone.shape  # the padding is cropped away
            torch.testing.assert_close(w_group, w_alone, rtol=1e-4, atol=1e-5)
    assert together[1].interrupted == "pruned here" and len(together[1].curve_val) == 3


def test_trials_with_embeddings_and_members_train_in_one_stack_as_alone(digits_folds):
    from sweeps.engine.train import train_trials

    shape = dict(embedding="periodic", n_frequencies=4, embedding_dim=3, ensemble=2, batch_size=64)
    configs = [NetConfig(1, 24, 0.1, 1e-4, 3e-3, frequency_scale=0.3, **shape),
               NetConfig(1, 40, 0.0, 1e-3, 1e-2, frequency_scale=2.0, **shape)]
    together = train_trials(digits_folds, configs, [5, 6], [None, None], max_epochs=4, patience=2)
    for config, seed, grouped in zip(configs, [5, 6], together):
        alone = train_trials(digits_folds, [config], [seed], [None], max_epochs=4, patience=2)[0]
        np.testing.assert_allclose(grouped.val_losses, alone.val_losses, rtol=1e-4)
        for w_group, w_alone in zip(grouped.model.params, alone.model.params):
            torch.testing.assert_close(w_group, w_alone, rtol=1e-4, atol=1e-5)


def test_slots_group_trials_by_shape_and_close_widths(digits_folds):
    import dataclasses
    from types import SimpleNamespace

    from sweeps.sweep.slots import Slots

    def config(depth, width):
        return NetConfig(depth, width, 0.0, 1e-4, 1e-3, batch_size=64)

    trainer = SimpleNamespace(folds=digits_folds, init=None, spec=SimpleNamespace(max_epochs=2, patience=None))
    slots = Slots(None, trainer, None, [])
    shapes = [("a", config(2, 512)), ("b", config(2, 16)), ("c", config(2, 64)), ("d", config(2, 100)),
              ("e", config(1, 32)), ("f", config(2, 300)), ("g", config(2, 32)), ("h", config(2, 128)),
              # what sets an epoch's length (re-sampling) or which tensors step (freeze) splits a group too
              ("i", dataclasses.replace(config(2, 16), resampling="over")),
              ("j", dataclasses.replace(config(2, 16), class_weight="balanced"))]
    for name, c in shapes:
        stack, trials = slots._stack_for(c)
        [index] = stack.add([c], [0])
        trials[index] = name
    groups = sorted(sorted(trials.values()) for _, trials in slots.stacks)
    # small widths share a stack whatever their ratio; wider ones only with their own width; depth splits
    assert groups == [["a"], ["b", "c", "g", "j"], ["d"], ["e"], ["f"], ["h"], ["i"]]
    stack, _ = slots._stack_for(config(2, 300))
    assert stack.configs[0].width == 300  # an equal width joins its stack


def test_huber_trials_train_in_one_stack_as_alone_and_are_scored_by_squared_error():
    from sweeps.engine.train import train_trials

    folds = diabetes_folds()
    configs = [NetConfig(1, 32, 0.0, 1e-4, 1e-2, batch_size=32, huber=0.5), NetConfig(1, 32, 0.0, 1e-4, 1e-2,
                                                                                        batch_size=32)]
    together = train_trials(folds, configs, [4, 4], [None, None], max_epochs=8, patience=None)
    for config, grouped in zip(configs, together):
        alone = train_trials(folds, [config], [4], [None], max_epochs=8, patience=None)[0]
        np.testing.assert_allclose(grouped.val_losses, alone.val_losses, rtol=1e-4)
    huber, squared = together
    assert huber.val_losses != squared.val_losses  # same seed, the loss changed the training
    f, model = 0, huber.model.select(torch.tensor([0]))
    prediction = model.forward(folds.X_val[f:f + 1])[0].squeeze(-1)
    mse = ((prediction - folds.y_val[f:f + 1]).square() * folds.val_weight[f:f + 1]).sum() / folds.val_weight[f:f + 1].sum()
    assert huber.val_losses[f] == pytest.approx(mse.item(), rel=1e-4)  # the value: squared error, not Huber's

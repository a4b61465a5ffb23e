"""Continuous batching: trials join a stack in training and train as they would alone."""

import numpy as np
import pytest
import torch

from sweeps.engine.config import NetConfig
from sweeps.engine.stack import Stack
from sweeps.engine.train import train_trials


def _alone(folds, config, seed, hook=None, **settings):
    return train_trials(folds, [config], [seed], [hook], **settings)[0]


def _same(slot, alone):
    assert slot.best_epochs == alone.best_epochs and slot.interrupted == alone.interrupted
    assert slot.stop_reasons == alone.stop_reasons
    np.testing.assert_allclose(slot.val_losses, alone.val_losses, rtol=1e-4)
    np.testing.assert_allclose(slot.curve_train, alone.curve_train, rtol=1e-4)
    for w_slot, w_alone in zip(slot.model.params, alone.model.params):
        assert w_slot.shape == w_alone.shape  # the padding is cropped away
        torch.testing.assert_close(w_slot, w_alone, rtol=1e-4, atol=1e-5)


def test_a_trial_that_joins_a_stack_in_training_trains_as_it_would_alone(digits_folds):
    settings = dict(max_epochs=6, patience=2)
    first = NetConfig(2, 24, 0.1, 1e-4, 3e-3, batch_size=64)
    # wider than the stack (it widens), its own schedule, AdamW settings, noise and class weights
    late = NetConfig(2, 48, 0.25, 1e-3, 1e-2, batch_size=64, beta2=0.95, schedule="cosine", noise=0.1,
                     class_weight="balanced", label_smoothing=0.1, grad_clip=1.0)
    epochs_seen = []

    def hook(epoch, value, folds):
        epochs_seen.append(epoch)
        return None

    stack = Stack(digits_folds, **settings)
    [a] = stack.add([first], [3])
    results = dict(stack.epoch())
    results.update(stack.epoch())
    [b] = stack.add([late], [4], [hook])  # joins at the stack's third epoch
    while stack.training:
        results.update(stack.epoch())
    assert epochs_seen[0] == 1  # its own epochs: it starts at 1
    _same(results[a], _alone(digits_folds, first, 3, **settings))
    _same(results[b], _alone(digits_folds, late, 4, **settings))


def test_a_pruned_slot_is_refilled_and_the_others_go_on(digits_folds):
    settings = dict(max_epochs=5, patience=None)
    configs = [NetConfig(1, 16, 0.0, 1e-4, 3e-3, batch_size=64), NetConfig(1, 32, 0.0, 1e-4, 1e-2, batch_size=64)]
    refill = NetConfig(1, 8, 0.2, 0.0, 5e-3, batch_size=64)
    stack = Stack(digits_folds, **settings)
    first, pruned = stack.add(configs, [1, 2], [None, lambda epoch, value, folds: "pruned" if epoch == 2 else None])
    results = {}
    while pruned not in results:
        results.update(stack.epoch())
    assert stack.training == [first] and len(stack.positions.live) == digits_folds.k  # its folds left
    # a stack that lives for a whole sweep keeps nothing heavy of its finished trials
    assert stack.stops.results[pruned] is None and stack.stops.best.k == digits_folds.k
    assert all(stack.rows.batch_rngs[p] is None for p in stack.positions.of_trial(pruned))
    [third] = stack.add([refill], [7])
    while stack.training:
        results.update(stack.epoch())
    assert results[pruned].interrupted == "pruned" and len(results[pruned].curve_val) == 2
    assert len(results[third].curve_val) == 5  # its own max_epochs, counted from when it joined
    _same(results[first], _alone(digits_folds, configs[0], 1, **settings))
    _same(results[third], _alone(digits_folds, refill, 7, **settings))


def test_a_stack_refuses_a_trial_of_another_shape(digits_folds):
    stack = Stack(digits_folds, max_epochs=2, patience=None)
    stack.add([NetConfig(1, 16, 0.0, 1e-4, 3e-3, batch_size=64)], [0])
    deeper = NetConfig(2, 16, 0.0, 1e-4, 3e-3, batch_size=64)
    assert not stack.accepts(deeper)
    with pytest.raises(ValueError, match="cannot share a stack"):
        stack.add([deeper], [1])


def test_a_trials_seconds_are_its_share_of_the_stacks_time(digits_folds):
    import time

    # Epochs enough that the shared time outweighs each trial's own final scoring, timed on its
    # own: at 4 epochs (18 ms a trial) one scoring slowed by a loaded machine broke the 30 %.
    settings = dict(max_epochs=16, patience=None)
    config = NetConfig(1, 32, 0.0, 1e-4, 3e-3, batch_size=64)
    started = time.perf_counter()
    alone = _alone(digits_folds, config, 0, **settings)
    wall_alone = time.perf_counter() - started
    assert 0.5 * wall_alone <= alone.seconds <= wall_alone
    started = time.perf_counter()
    twins = train_trials(digits_folds, [config, config], [0, 1], [None, None], **settings)
    wall = time.perf_counter() - started
    # two equal trials share the stack's time equally, and together account for its wall time
    assert 0.5 * wall <= sum(r.seconds for r in twins) <= wall
    assert twins[0].seconds == pytest.approx(twins[1].seconds, rel=0.3)

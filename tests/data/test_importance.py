"""Importance weighting for covariate shift: density ratios from a domain classifier, fitted per
fold on its training rows and the target rows, applied as training-row weights."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

import sweeps.data.folds
from sweeps import Categorical, Space, SweepsError
from sweeps.data.dataset import load_dataset
from sweeps.results.evaluate import evaluate_study
from sweeps.data.folds import make_final_fit, make_folds
from sweeps.data.importance import MAX_RATIO, density_ratios
from sweeps.engine.losses import loss_and_grad
from sweeps.sweep.optimize import run_study
from sweeps.engine.config import NetConfig
from sweeps.engine.train import train_folds

from conftest import digits_study

X, Y = load_digits(return_X_y=True)


def test_density_ratios_follow_the_true_ratio_clipped_with_mean_one():
    rng = np.random.default_rng(0)
    source, target = rng.normal(0, 1, (4000, 1)), rng.normal(1, 1, (4000, 1))
    real = np.ones(4000, bool)
    ratios = density_ratios(source.astype(np.float32), target.astype(np.float32), real, seed=0)
    true = np.exp(source[:, 0] - 0.5)  # N(1,1) / N(0,1) at x
    clipped = np.clip(true, 1 / MAX_RATIO, MAX_RATIO)
    assert np.corrcoef(ratios, clipped / clipped.mean())[0, 1] > 0.99
    assert ratios.mean() == pytest.approx(1.0, abs=1e-5)
    assert ratios.max() / ratios.min() <= MAX_RATIO**2 * 1.0001


@pytest.mark.parametrize("classification", [True, False])
def test_row_weights_give_the_weighted_mean_loss_and_its_gradient(classification):
    gen = torch.Generator().manual_seed(0)
    out = torch.randn(2, 30, 3 if classification else 1, generator=gen, requires_grad=True)
    y = torch.randint(0, 3, (2, 30), generator=gen) if classification else torch.randn(2, 30, generator=gen)
    w = torch.rand(2, 30, generator=gen) + 0.1
    per_row = (torch.nn.functional.cross_entropy(out.reshape(-1, 3), y.reshape(-1), reduction="none").view(2, 30)
               if classification else (out.squeeze(-1) - y) ** 2)
    ((per_row * w).sum(1) / w.sum(1)).sum().backward()
    loss_sum, grad = loss_and_grad(out.detach().clone(), y, classification, row_weight=w)
    torch.testing.assert_close(grad, out.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_sum / 30, ((per_row * w).sum(1) / w.sum(1)).detach(), rtol=1e-5, atol=1e-6)


def shifted_spec(**changes):
    """Covariate shift: training rows of every digit; the deployment (target rows and held-out
    test rows) sees mostly digits 0-4, so training rows that look like those should weigh more."""
    rng = np.random.default_rng(0)
    order = rng.permutation(len(Y))
    train, rest = order[:1000], order[1000:]
    rest = rest[(Y[rest] < 5) | (rng.random(len(rest)) < 0.2)]
    target, test = rest[:250], rest[250:]
    fields = dict(data=(X[train], Y[train]), test_data=(X[test], Y[test]), target_data=X[target],
                  space=Space(depth=1, width=16, lr=(3e-3, 1e-2), importance=Categorical(["none", "density_ratio"])),
                  n_trials=4, max_epochs=4)
    return digits_study(**{**fields, **changes})


def test_weights_are_fitted_per_fold_on_its_training_rows_and_the_target_rows(monkeypatch):
    seen = []

    def spy(train, target, real, seed):
        seen.append((train.copy(), target.copy()))
        return density_ratios(train, target, real, seed)

    monkeypatch.setattr(sweeps.data.folds, "density_ratios", spy)
    dataset = load_dataset(shifted_spec())
    folds = make_folds(dataset, 3, 0)
    assert len(seen) == 3 and folds.train_importance.shape == folds.X_train.shape[:2]
    for f, (train, target) in enumerate(seen):
        np.testing.assert_array_equal(train, folds.X_train[f].numpy())  # the fold's training rows only
        np.testing.assert_array_equal(target, folds.preprocessings[f].features(dataset.target))
    # Refits that differ only in their seeds (refit-seeds) share one fit of the weights.
    seen.clear()
    final, _ = make_final_fit(dataset, copies=3)
    assert len(seen) == 1 and torch.equal(final.train_importance[0], final.train_importance[2])
    # Training rows of the digits the target favours weigh more than the others, on every fold.
    for f in range(3):
        digits = folds.y_train[f]
        weights = folds.train_importance[f]
        assert weights[digits < 5].mean() > 1.5 * weights[digits >= 5].mean()


def test_uniform_weights_train_as_no_weights_and_real_ones_change_training():
    folds = make_folds(load_dataset(shifted_spec()), 3, 0)
    config = NetConfig(1, 16, 0.0, 1e-4, 3e-3)
    plain = train_folds(folds, config, max_epochs=3, patience=None, seed=0)
    weighted = dataclasses.replace(config, importance="density_ratio")
    uniform = train_folds(dataclasses.replace(folds, train_importance=torch.ones_like(folds.train_importance)),
                          weighted, max_epochs=3, patience=None, seed=0)
    np.testing.assert_allclose(uniform.val_losses, plain.val_losses, rtol=1e-4)
    assert not np.allclose(train_folds(folds, weighted, max_epochs=3, patience=None, seed=0).val_losses,
                           plain.val_losses, rtol=1e-3)


def test_importance_is_searchable_and_a_chosen_trial_evaluates(tmp_path):
    spec = shifted_spec()
    url = f"sqlite:///{tmp_path / 's.db'}"
    dataset = load_dataset(spec)
    study = run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    assert {t.params.get("importance", "none") for t in study.trials} <= {"none", "density_ratio"}
    entry, _ = evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "m.pt"),
                              err=io.StringIO())
    assert 0 < entry["metric"] <= 1


def test_target_rows_equal_to_test_rows_are_found_whatever_their_dtypes():
    """The same rows as the study reads them, in a table with one more missing value (an integer
    column becomes float64) or as strings of the same category: still the held-out rows."""
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"n": rng.integers(0, 1000, 600), "x": rng.normal(size=600),
                          "c": rng.choice(["u", "v", "w"], 600)})
    label = (frame["x"] > 0).astype(int).to_numpy()
    spec = digits_study(data=(frame, label), space=Space(importance="density_ratio"), target_data=frame.iloc[:1])
    test = load_dataset(digits_study(data=(frame, label))).test  # the same split: seed, size and labels
    target = frame.iloc[test[:5]].copy()
    target.loc[target.index[0], "x"] = np.nan  # one missing value elsewhere in the target rows...
    target = pd.concat([target, frame.iloc[:1].assign(n=np.nan)])  # ...and an integer column turned float
    assert target["n"].dtype == np.float64 and frame["n"].dtype == np.int64
    with pytest.raises(SweepsError, match=r"target_data: 4 of its 6 rows equal held-out test rows"):
        load_dataset(spec.replace(target_data=target))


def test_target_rows_that_are_test_rows_are_refused_and_importance_needs_them():
    spec = shifted_spec()
    test_rows = spec.test_data[0]
    with pytest.raises(SweepsError, match=r"target_data: 5 of its 255 rows equal held-out test rows"):
        load_dataset(spec.replace(target_data=np.concatenate([spec.target_data, test_rows[:5]])))
    with pytest.raises(SweepsError, match=r"Space.importance: .* needs Study\(target_data="):
        digits_study(space=Space(importance="density_ratio"))
    with pytest.raises(SweepsError, match=r"target_data: its columns differ from data's \(3 against 64\)"):
        load_dataset(spec.replace(target_data=X[:10, :3]))

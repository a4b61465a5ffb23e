"""The promises of the README, each checked by itself: break the rule in the code and a test here fails.

Deterministic, on real data (digits, diabetes), whatever the machine's speed or load.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import optuna
import pytest
import torch
from optuna.trial import TrialState
from sklearn.datasets import load_diabetes, load_digits

from sweeps import Categorical, Space
from sweeps.data.dataset import load_dataset
from sweeps.data.folds import make_final_fit, make_folds
from sweeps.engine.dropout import effective_dropout
from sweeps.engine.model import StackedMLP
from sweeps.sweep.objective import make_objective
from sweeps.sweep.trial import trial_seed
from sweeps.sweep.optimize import run_study
from sweeps.engine.config import NetConfig
from sweeps.engine.train import train_folds
from sweeps.sweep.workers import Budget, optimize_until

from conftest import digits_study


def run(spec, url):
    return run_study(spec, load_dataset(spec), storage=url, progress=False, out=io.StringIO())


# --- data and folds -----------------------------------------------------------------------------
def test_classification_folds_are_stratified(digits_dataset):
    folds = make_folds(digits_dataset, folds=3, seed=0)
    counts = np.bincount(digits_dataset.y[digits_dataset.dev])
    for val in folds.val_rows:  # StratifiedKFold: each class split as evenly as rows allow
        in_fold = np.bincount(digits_dataset.y[val], minlength=len(counts))
        assert np.all(np.abs(in_fold - counts / 3) <= 1), in_fold


def test_the_regression_target_is_scaled_with_each_training_part_only():
    spec = digits_study(task="regression", data=lambda: load_diabetes(return_X_y=True))
    dataset = load_dataset(spec)
    folds = make_folds(dataset, folds=3, seed=0)
    y = dataset.y.astype(np.float64)
    for prep, train, std in zip(folds.preprocessings, folds.train_rows, folds.target_std.tolist()):
        assert prep.y_mean == pytest.approx(y[train].mean()) and prep.y_std == pytest.approx(y[train].std())
        assert std == pytest.approx(y[train].std(), rel=1e-6)
        assert prep.y_mean != pytest.approx(y.mean(), abs=1e-9)  # not all rows (test rows included)
    _, final = make_final_fit(dataset)
    assert final.y_mean == pytest.approx(y[dataset.dev].mean())
    assert final.y_mean != pytest.approx(y.mean(), abs=1e-9)


# --- training -------------------------------------------------------------------------------------
@pytest.mark.parametrize("patience", [1, 3])
def test_a_fold_stops_exactly_patience_epochs_after_its_best(digits_folds, patience):
    # lr 0: the validation loss never improves after epoch 1, so every fold stops at epoch 1 + patience.
    result = train_folds(digits_folds, NetConfig(1, 16, 0.0, 0.0, 0.0), max_epochs=20, patience=patience, seed=0)
    assert result.best_epochs == [1, 1, 1]
    assert [len(c) for c in result.fold_curves] == [1 + patience] * 3
    assert result.stop_reasons == [f"early stop at epoch {1 + patience}: no better validation loss for "
                                   f"{patience} epochs"] * 3


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_drops_a_fraction_p_of_the_units_in_the_forward_pass(p):
    net = StackedMLP.init([0], n_in=4, n_out=2, depth=1, width=2048, dropout=p)
    net.biases[0].fill_(10.0)  # every unit active before dropout
    x = torch.zeros(1, 64, 4)
    _, cache = net.forward(x, dropout_rng=torch.Generator().manual_seed(0))
    dropped = (cache.activations[1] == 0).float().mean().item()
    assert dropped == pytest.approx(effective_dropout(p), abs=0.01)  # dropped: p, kept: 1 - p
    _, cache = net.forward(x)  # evaluation: nothing dropped
    assert (cache.activations[1] == 0).sum() == 0


def test_a_searched_class_weight_scores_every_trial_by_the_balanced_loss(sqlite_url):
    X, _ = load_digits(return_X_y=True)
    y = (np.random.default_rng(0).random(len(X)) < 0.1).astype(int)  # a 10 % minority
    space = Space(depth=1, width=16, dropout=0.0, weight_decay=1e-4, lr=1e-2,
                  class_weight=Categorical(["none", "balanced"]))
    spec = digits_study(data=(X, y), space=space, n_trials=1, max_epochs=4, patience=4)
    optuna.create_study(study_name=spec.name, storage=sqlite_url).enqueue_trial({"class_weight": "none"})
    trial = run(spec, sqlite_url).trials[0]
    assert trial.params["class_weight"] == "none"  # trained without weights...
    folds = make_folds(load_dataset(spec), 3, 0, scaling=spec.preprocessing)
    config = NetConfig.from_params(trial.params)
    seed = trial_seed(0, 0)
    balanced = train_folds(folds, dataclasses.replace(config, balanced_validation=True), max_epochs=4, patience=4,
                           seed=seed)
    plain = train_folds(folds, config, max_epochs=4, patience=4, seed=seed)
    assert trial.value == pytest.approx(balanced.cv_loss, rel=1e-5)  # ...and scored class-balanced
    assert trial.value != pytest.approx(plain.cv_loss, rel=1e-3)


# --- evaluate -------------------------------------------------------------------------------------
def test_a_refit_trains_the_median_of_the_trials_best_epochs(sqlite_url, monkeypatch):
    import sweeps.results.final
    from sweeps.results.evaluate import evaluate_study

    spec = digits_study(n_trials=2, max_epochs=12, final_model="refit")
    dataset = load_dataset(spec)
    study = run(spec, sqlite_url)
    seen = []
    real = sweeps.results.final.train_folds

    def spy(folds, config, **kwargs):
        seen.append(kwargs)
        return real(folds, config, **kwargs)

    monkeypatch.setattr(sweeps.results.final, "train_folds", spy)
    entry, _ = evaluate_study(spec, dataset, storage=sqlite_url, model_path=str(sqlite_url[10:] + ".pt"), err=io.StringIO())
    epochs = int(np.median(study.best_trial.user_attrs["best_epochs"]))
    assert seen[0]["max_epochs"] == epochs == entry["epochs"] and seen[0]["patience"] is None
    assert seen[0]["horizon"] == 12  # the schedule keeps the study's horizon


# --- workers ----------------------------------------------------------------------------------------
def test_of_two_workers_that_both_see_room_only_one_trains(sqlite_url, digits_folds, monkeypatch):
    """Drive the race deterministically: worker A has asked the last trial the study needs; worker B
    checked the counts just before that (they showed room), then asks. B's trial must not train."""
    import sweeps.sweep.workers

    spec = digits_study(n_trials=2)
    run(spec.replace(n_trials=1), sqlite_url)  # one finished trial
    study_a = optuna.load_study(study_name=spec.name, storage=sqlite_url)
    trial_a = study_a.ask()  # worker A: the second and last trial, running
    stale = {state: 0 for state in TrialState}
    stale[TrialState.COMPLETE] = 1  # what B saw before A asked: 1 finished, nothing running
    real_counts, calls = sweeps.sweep.workers.counts, []

    def counts_seen_by_b(study):  # the first check is the stale one; later ones are real
        calls.append(1)
        return dict(stale) if len(calls) == 1 else real_counts(study)

    monkeypatch.setattr(sweeps.sweep.workers, "counts", counts_seen_by_b)
    trained = []
    objective = make_objective(spec, digits_folds)

    def counted(trial):
        trained.append(trial.number)
        return objective(trial)

    study_b = optuna.load_study(study_name=spec.name, storage=sqlite_url)
    optimize_until(study_b, counted, Budget(target=2))
    assert trained == []  # B's trial was refused by the admission rule, not trained
    b = study_b.trials[-1]
    assert b.number > trial_a.number and b.state == TrialState.FAIL
    assert b.user_attrs["fail_reason"] == "not needed: the study reached its target of 2 trials"
    study_a.tell(trial_a, 0.5)


# --- every way a trial ends badly has its reason ------------------------------------------------
def test_a_space_function_that_fails_in_one_trial_fails_it_with_the_reason(sqlite_url):
    def space(trial):
        if trial.number == 1:
            raise ValueError("no layer for this one")
        return {"depth": 1, "width": 16, "dropout": 0.0, "weight_decay": 0.0, "lr": 1e-2}

    from sweeps import SweepsError

    with pytest.raises(SweepsError, match="raised ValueError: no layer for this one"):
        run(digits_study(space=space, n_trials=3), sqlite_url)
    trials = optuna.load_study(study_name="digits-test", storage=sqlite_url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL]
    assert "no layer for this one" in trials[1].user_attrs["fail_reason"]

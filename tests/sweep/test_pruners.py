"""Fold-paired pruning, the honest CV estimate, the one-standard-error export and the converged stop:
decisions checked with ask/tell and hand-written numbers."""

from __future__ import annotations

import math

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState

from sweeps.sweep import pruners
from sweeps.results.export import one_standard_error
from sweeps.sweep.pruners import AfterStartup, AnyPruner, FoldPairedPruner
from sweeps.sweep.search import converged
from sweeps.engine.config import NetConfig
from sweeps.engine.scores import honest_cv
from sweeps.engine.train import train_folds


def complete(study, value, curves, **attrs):
    # what the objective reports: per epoch, the mean over folds of each fold's best so far
    reported = {e + 1: float(np.mean([min(c[: e + 1]) for c in curves])) for e in range(len(curves[0]))} if curves else {}
    study.add_trial(optuna.trial.create_trial(
        value=value, params={"width": attrs.pop("width", 32), "weight_decay": attrs.pop("weight_decay", 1e-4)},
        distributions={"width": IntDistribution(8, 512), "weight_decay": FloatDistribution(0, 1)},
        user_attrs={"fold_curves": curves, **attrs}, intermediate_values=reported))


def running(study, epoch, fold_losses):
    trial = study.ask()
    trial.report(float(np.mean(fold_losses)), step=epoch)
    pruners.report_folds(trial, fold_losses)
    return trial


REFERENCE = [[0.9, 0.6, 0.50], [1.2, 0.9, 0.80], [0.7, 0.5, 0.45], [1.0, 0.7, 0.60], [0.8, 0.55, 0.50]]


@pytest.fixture
def study():
    pruner = FoldPairedPruner(reference=1, n_startup_trials=3, n_warmup_steps=2)
    study = optuna.create_study(pruner=pruner)
    for shift in (0.0, 0.05, 0.1):  # the best one is the unshifted reference
        complete(study, 0.57 + shift, [[v + shift for v in c] for c in REFERENCE])
    return study


def test_a_trial_worse_on_every_fold_at_the_same_epoch_is_pruned_with_the_numbers(study):
    # At epoch 2 the best trial's folds were at 0.6, 0.9, 0.5, 0.7, 0.55; this one is 0.1 worse on each.
    trial = running(study, 2, [0.71, 0.99, 0.62, 0.79, 0.66])
    assert trial.should_prune()
    reason = study.pruner.last_reason
    assert reason.startswith("pruned by FoldPairedPruner at epoch 2: worse than trial #0 (rank 1)")
    assert "on 5 of 5 folds, by 0.104" in reason and "paired t =" in reason


def test_a_trial_worse_on_average_but_not_fold_by_fold_is_not_pruned(study):
    # The same mean difference (+0.1), but it comes from one fold: noise, not a worse configuration.
    assert not running(study, 2, [1.1, 0.9, 0.5, 0.7, 0.55]).should_prune()
    # The median pruner compares means: it would prune it (the other trials' means are lower).
    median = optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    assert median.prune(study, study.trials[-1])


def test_nothing_is_pruned_before_warm_up_or_startup_trials():
    study = optuna.create_study(pruner=FoldPairedPruner(reference=1, n_startup_trials=3, n_warmup_steps=2))
    complete(study, 0.57, REFERENCE)
    assert not running(study, 2, [2.0] * 5).should_prune()  # one complete trial, three needed
    for shift in (0.05, 0.1):
        complete(study, 0.6 + shift, [[v + shift for v in c] for c in REFERENCE])
    assert not running(study, 1, [2.0] * 5).should_prune()  # epoch 1 < warm-up
    assert running(study, 2, [2.0] * 5).should_prune()


def test_a_reference_that_stopped_earlier_keeps_its_best(study):
    trial = running(study, 30, [0.46, 0.78, 0.44, 0.58, 0.5])  # epoch 30: the reference stopped at 3
    assert not trial.should_prune()  # as good as the reference's final losses: kept
    assert running(study, 30, [0.6, 0.9, 0.55, 0.7, 0.6]).should_prune()


def test_any_pruner_names_the_one_that_pruned(study):
    any_pruner = AnyPruner(optuna.pruners.NopPruner(), study.pruner)
    trial = running(study, 2, [0.71, 0.99, 0.62, 0.79, 0.66])
    assert any_pruner.prune(study, study.trials[-1])
    assert any_pruner.last_pruner == "FoldPairedPruner" and "worse than trial #0" in any_pruner.last_reason
    study.tell(trial, state=optuna.trial.TrialState.PRUNED)


# --- the honest CV estimate ------------------------------------------------------------------------
def test_honest_cv_scores_each_fold_at_the_epoch_the_other_folds_chose():
    curves = [[1.0, 0.5, 0.6, 0.7],   # fold 0: best at epoch 2
              [1.0, 0.8, 0.4, 0.9],   # fold 1: best at epoch 3 (a lucky dip)
              [1.0, 0.6, 0.7, 0.8]]   # fold 2: best at epoch 2
    # fold 0: others' mean per epoch (1.0, 0.7, 0.55, 0.85) -> epoch 3 -> 0.6
    # fold 1: others (1.0, 0.55, 0.65, 0.75) -> epoch 2 -> 0.8
    # fold 2: others (1.0, 0.65, 0.5, 0.8) -> epoch 3 -> 0.7
    assert honest_cv(curves) == pytest.approx((0.6 + 0.8 + 0.7) / 3)
    assert honest_cv([[0.5, 0.4], [0.5]]) == pytest.approx((0.5 + 0.5) / 2)  # only epochs all of them trained
    assert honest_cv([[0.5]]) is None  # one fold: no other fold to choose for it


def test_the_optimism_of_early_stopping_is_positive_and_shrinks_with_patience(digits_folds):
    optimism = {}
    for patience in (2, 12):
        values = []
        for seed in range(4):
            result = train_folds(digits_folds, NetConfig(1, 32, 0.0, 1e-4, 1e-2), max_epochs=40, patience=patience,
                                 seed=seed)
            values.append(result.honest_cv_loss - result.cv_loss)
        optimism[patience] = float(np.mean(values))
    assert optimism[2] > 0 and optimism[12] >= 0
    assert optimism[12] < optimism[2], optimism


# --- one standard error -------------------------------------------------------------------------
def test_one_se_picks_the_simplest_configuration_within_one_standard_error_of_the_best():
    study = optuna.create_study()
    fold5 = [0.1] * 5
    complete(study, 0.100, [], width=512, n_params=200_000, cv_loss_std=0.02, fold_val_losses=fold5)  # best
    complete(study, 0.108, [], width=64, n_params=5_000, cv_loss_std=0.02, fold_val_losses=fold5)  # within 0.0089
    complete(study, 0.108, [], width=64, n_params=5_000, weight_decay=1e-2, cv_loss_std=0.02, fold_val_losses=fold5)
    complete(study, 0.120, [], width=8, n_params=500, cv_loss_std=0.02, fold_val_losses=fold5)  # outside
    chosen, why = one_standard_error(study.trials)
    assert chosen.number == 2  # fewest parameters within the error, then the stronger weight decay
    assert "3 of 4 complete trials" in why and f"{0.02 / math.sqrt(5):.4f}" in why


# --- the converged stop ---------------------------------------------------------------------------
def finished_study(values, std=0.05):
    study = optuna.create_study()
    for v in values:
        complete(study, v, [], cv_loss_std=std, fold_val_losses=[v] * 5)
    return study


def test_converged_when_the_last_trials_improve_less_than_one_standard_error():
    se = 0.05 / math.sqrt(5)  # 0.0224
    plateau = [0.5 - 0.01 * i for i in range(15)] + [0.36 - 0.001 * i for i in range(15)]  # gains < se at the end
    reason = converged(finished_study(plateau).trials)
    assert reason and reason.startswith("converged: the last 10 of 30 finished trials improved the best CV loss by")
    assert f"({se:.4g} = fold std / sqrt(5))" in reason
    still_learning = [0.5 - 0.01 * i for i in range(30)]  # 0.1 gained in the last 10: more than se
    assert converged(finished_study(still_learning).trials) is None
    assert converged(finished_study(plateau[:19]).trials) is None  # fewer than 20 complete trials


@pytest.mark.parametrize("values, window", [
    # 60 finished: the window is a third of them, 20. The last 10 gained nothing, the 10 before a lot.
    ([0.5 - 0.005 * i for i in range(40)] + [0.25 - 0.005 * i for i in range(10)]
     + [0.2 - 0.0001 * i for i in range(10)], 20),
    # 24 finished: the window is 10, not a third (8). The last 8 gained nothing, the 2 before a lot.
    ([0.5 - 0.01 * i for i in range(14)] + [0.30, 0.29] + [0.289 - 0.0001 * i for i in range(8)], 10),
])
def test_the_converged_window_is_the_last_max_10_or_a_third_of_the_finished_trials(values, window):
    # The improvement is measured over exactly that window: a window one trial too short or too
    # long sees another improvement, and these values make the two answers differ.
    assert converged(finished_study(values).trials) is None  # the window's gain is above one SE
    flat = values[:-window] + [min(values[:-window]) - 0.0001 * (i + 1) for i in range(window)]
    reason = converged(finished_study(flat).trials)
    assert reason and reason.startswith(f"converged: the last {window} of {len(values)} finished trials")


def test_after_startup_asks_its_pruner_every_time_but_prunes_only_once_enough_trials_completed():
    class Always(optuna.pruners.BasePruner):
        asked = 0

        def prune(self, study, trial):
            Always.asked += 1
            return True

    pruner = pruners.AfterStartup(Always(), n_startup_trials=2)
    study = optuna.create_study()
    complete(study, 0.5, [])
    trial = running(study, 3, [0.9, 0.9])
    frozen = study._storage.get_trial(trial._trial_id)
    assert not pruner.prune(study, frozen) and Always.asked == 1  # asked (it records), overruled
    complete(study, 0.4, [])
    assert pruner.prune(study, frozen) and pruner.last_pruner == "Always"
    reads = []  # once enough trials completed, the start-up is not counted again
    study.get_trials = lambda *a, **k: reads.append(1) or []
    assert pruner.prune(study, frozen) and not reads
    other = optuna.create_study()  # another study starts its own count
    assert not pruner.prune(other, frozen)
    with pytest.raises(ValueError):
        pruners.AfterStartup(Always(), n_startup_trials=-1)


@pytest.mark.parametrize("make", [
    lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=5, reduction_factor=4),
    lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=2, reduction_factor=3, min_early_stopping_rate=1),
    lambda: optuna.pruners.SuccessiveHalvingPruner(),  # "auto": always asked
    lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=3, interval_steps=2),
    lambda: optuna.pruners.PercentilePruner(60.0, n_startup_trials=1, n_warmup_steps=0),
    lambda: AfterStartup(optuna.pruners.SuccessiveHalvingPruner(min_resource=3, reduction_factor=2), 2),
    lambda: AnyPruner(optuna.pruners.MedianPruner(n_warmup_steps=4), optuna.pruners.NopPruner()),
])
def test_a_pruner_is_skipped_only_at_epochs_where_it_cannot_prune(make):
    """Skipping `should_prune` where `may_prune_at` says False changes no decision: on real
    studies of noisy curves, asked at every epoch, the pruner prunes only where it says it may."""
    from sweeps.sweep.pruners import may_prune_at

    pruner = make()
    study = optuna.create_study(pruner=pruner)
    rng = np.random.default_rng(0)
    pruned_at = []
    for _ in range(25):
        trial = study.ask()
        level, value = rng.uniform(0.2, 2.0), None
        for epoch in range(1, 41):
            value = level * (1 + 1 / epoch) + rng.normal(0, 0.05)
            trial.report(value, epoch)
            if trial.should_prune():
                assert may_prune_at(pruner, epoch), f"pruned at epoch {epoch}, which may_prune_at skips"
                pruned_at.append(epoch)
                study.tell(trial, state=TrialState.PRUNED)
                break
        else:
            study.tell(trial, value)
    if not isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner) or pruner._min_resource != "auto":
        assert pruned_at  # the check above was exercised
    skipped = [e for e in range(1, 41) if not may_prune_at(pruner, e)]
    assert skipped or type(pruner) is optuna.pruners.PercentilePruner or pruner._min_resource is None


def test_successive_halving_is_asked_at_its_rungs_only():
    from sweeps.sweep.pruners import may_prune_at

    default = AfterStartup(optuna.pruners.SuccessiveHalvingPruner(min_resource=5, reduction_factor=4), 5)
    assert [e for e in range(1, 100) if may_prune_at(default, e)] == [5, 20, 80]
    median = optuna.pruners.MedianPruner(n_warmup_steps=2, interval_steps=3)
    assert [e for e in range(1, 12) if may_prune_at(median, e)] == [2, 5, 8, 11]

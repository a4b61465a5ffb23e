"""Pruners that use what only sweeps has: every fold's validation loss, at every epoch.

Optuna's pruners see one number per step (the mean over folds). Folds differ in difficulty
far more than good configurations differ from each other, so a trial compared with others
on that mean is compared mostly on noise. Comparing fold with fold (the same rows) cancels
the folds' difficulty: `FoldPairedPruner` prunes a trial only when, at the same epoch, it is
worse than a reference trial on the folds *together*, by a paired t-test.

Both are Optuna `BasePruner`s: pass them as `Study(pruner=...)`, alone or with another
through `AnyPruner(...)`.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from sweeps.store import internals

# The running trials' per-fold best validation loss so far, by trial id: set by the objective
# in the process that trains the trial, just before it asks `should_prune` (no storage write).
_running: dict[int, list[float]] = {}


def report_folds(trial: optuna.Trial, fold_losses: list[float]) -> None:
    _running[internals.trial_id(trial)] = list(fold_losses)


def forget(trial: optuna.Trial) -> None:
    _running.pop(internals.trial_id(trial), None)


def _t_critical(confidence: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(confidence, df))


class FoldPairedPruner(optuna.pruners.BasePruner):
    """Prune a trial that is clearly worse, fold by fold, than a reference trial at the same epoch.

    Args:
        reference: compare with the trial ranked `reference` among the complete ones (1: the
            best). A trial worse than the 3rd best may still beat the best; one clearly worse
            than the 3rd best at the same epoch rarely does.
        confidence: the one-sided paired t-test's level: prune when the mean difference
            over folds exceeds its standard error times the t quantile (2.13 for 5 folds at 0.95).
        n_startup_trials: as `optuna.pruners.MedianPruner`: no pruning before that many
            complete trials.
        n_warmup_steps: as `optuna.pruners.MedianPruner`: no pruning before that epoch.

    The reason of the last prune (with its numbers) is in `last_reason`, which the objective
    stores as the trial's `prune_reason`.
    """

    def __init__(self, reference: int = 3, confidence: float = 0.95, n_startup_trials: int = 5,
                 n_warmup_steps: int = 5) -> None:
        if reference < 1 or not 0.5 < confidence < 1 or n_startup_trials < 0 or n_warmup_steps < 0:
            raise ValueError("FoldPairedPruner: reference >= 1, 0.5 < confidence < 1, n_startup_trials >= 0 "
                             "and n_warmup_steps >= 0 must hold.")
        self.reference, self.confidence = reference, confidence
        self.n_startup_trials, self.n_warmup_steps = n_startup_trials, n_warmup_steps
        self.last_reason: str | None = None

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        self.last_reason = None
        epoch = trial.last_step
        ours = _running.get(internals.trial_id(trial))
        if epoch is None or epoch < self.n_warmup_steps or ours is None:
            return False
        complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                    if t.user_attrs.get("fold_curves") and len(t.user_attrs["fold_curves"]) == len(ours)]
        if len(complete) < max(self.n_startup_trials, self.reference):
            return False
        reference = sorted(complete, key=lambda t: t.value)[self.reference - 1]
        theirs = [_best_so_far(curve, epoch) for curve in reference.user_attrs["fold_curves"]]
        if any(v is None for v in theirs) or not all(map(math.isfinite, ours)):
            return False
        differences = np.asarray(ours) - np.asarray(theirs)
        mean, k = float(differences.mean()), len(differences)
        spread = float(differences.std(ddof=1)) / math.sqrt(k)
        critical = _t_critical(self.confidence, k - 1)
        if mean <= 0 or (spread > 0 and mean / spread <= critical):
            return False
        worse = int((differences > 0).sum())
        statistic = f"paired t = {mean / spread:.1f} > {critical:.2f}" if spread > 0 else "on every fold alike"
        self.last_reason = (f"pruned by FoldPairedPruner at epoch {epoch}: worse than trial #{reference.number} "
                            f"(rank {self.reference}) at that epoch on {worse} of {k} folds, by {mean:.4g} ± "
                            f"{spread:.2g} ({statistic})")
        return True


def _best_so_far(curve: list, epoch: int) -> float | None:
    """A fold's best validation loss up to `epoch` (1-based); a fold that stopped keeps its best."""
    values = [v for v in curve[:epoch] if v is not None]
    return min(values) if values else None


class AnyPruner(optuna.pruners.BasePruner):
    """Prune when any of `pruners` would (e.g. `AnyPruner(MedianPruner(), FoldPairedPruner())`)."""

    def __init__(self, *pruners: optuna.pruners.BasePruner) -> None:
        if not pruners:
            raise ValueError("AnyPruner needs at least one pruner.")
        self.pruners = pruners
        self.last_reason: str | None = None
        self.last_pruner: str | None = None

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        self.last_reason = self.last_pruner = None
        for pruner in self.pruners:
            if pruner.prune(study, trial):
                self.last_reason = getattr(pruner, "last_reason", None)
                self.last_pruner = type(pruner).__name__
                return True
        return False


class AfterStartup(optuna.pruners.BasePruner):
    """`pruner`, but no trial is pruned before `n_startup_trials` trials have completed.

    The inner pruner is still asked at every step, so that it records what it keeps (successive
    halving writes each trial's value at each rung, which later trials are compared with); only
    its "prune" is overruled while the study is young. A study of a handful of trials then
    finishes them, as with `MedianPruner(n_startup_trials=5)`, and its diagnosis has complete
    trials of several depths to compare.
    """

    def __init__(self, pruner: optuna.pruners.BasePruner, n_startup_trials: int = 5) -> None:
        if n_startup_trials < 0:
            raise ValueError("AfterStartup: n_startup_trials >= 0 must hold.")
        self.pruner, self.n_startup_trials = pruner, n_startup_trials
        self.last_reason: str | None = None
        self.last_pruner: str | None = None
        self._started: set[tuple[int, int]] = set()  # studies (storage, id) seen with enough complete trials

    def prune(self, study: optuna.Study, trial: FrozenTrial) -> bool:
        self.last_reason = self.last_pruner = None
        if not self.pruner.prune(study, trial):
            return False
        key = (id(internals.storage_of(study)), internals.study_id(study))
        if key not in self._started:
            # Counted until it is reached, then never again: complete trials only ever add up, and
            # each count reads the running trials back from the storage (with 8 in flight, a few
            # percent of a sweep of small nets).
            complete = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
            if complete < self.n_startup_trials:
                return False
            self._started.add(key)
        self.last_reason = getattr(self.pruner, "last_reason", None)
        self.last_pruner = getattr(self.pruner, "last_pruner", None) or type(self.pruner).__name__
        return True


def may_prune_at(pruner: optuna.pruners.BasePruner, epoch: int) -> bool:
    """Whether `pruner` can prune, at `epoch`, a trial that reports every epoch. False only where
    it certainly cannot: there the trial skips `Trial.should_prune`, which reads the trial's
    system attributes back from the storage (about 5 ms on SQLite, every epoch of every trial:
    a fifth of a sweep of small nets). Unknown pruners are always asked.

    Successive halving acts only at its rungs (epochs 5, 20, 80, ... by default); a median or
    percentile pruner after its warm-up, every `interval_steps`.
    """
    if isinstance(pruner, AfterStartup):
        return may_prune_at(pruner.pruner, epoch)
    if isinstance(pruner, AnyPruner):
        return any(may_prune_at(inner, epoch) for inner in pruner.pruners)
    if type(pruner) is optuna.pruners.NopPruner:
        return False
    if type(pruner) is optuna.pruners.SuccessiveHalvingPruner:
        rungs = internals.halving_rungs(pruner)
        if rungs is None:
            return True
        rung, factor = rungs
        while rung < epoch:
            rung *= factor
        return rung == epoch
    if type(pruner) in (optuna.pruners.MedianPruner, optuna.pruners.PercentilePruner):
        warmup, interval = internals.percentile_steps(pruner)
        return epoch >= warmup and (epoch - warmup) % interval == 0
    return True

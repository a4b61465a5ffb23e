"""The search's defaults: the sampler and the pruner a study gets when it names none.

Below both `run` (one process) and `workers` (many), so that neither imports the other.
"""

from __future__ import annotations

import numpy as np
import optuna
from optuna.trial import TrialState

from sweeps.spec.params import Categorical, Float, Int
from sweeps.sweep.pruners import AfterStartup
from sweeps.spec.space import Space
from sweeps.spec.study import Study


def default_sampler(spec: Study, n_existing: int, worker: int = 0) -> optuna.samplers.BaseSampler:
    # Seeding from the trials already stored keeps a resumed study from replaying the first
    # run's random start-up configurations; from the worker index, keeps workers apart.
    # TPE's constant liar (on by default) keeps parallel workers from proposing the same point.
    return optuna.samplers.TPESampler(seed=worker_seed(spec.seed, n_existing, worker), multivariate=True)


PRUNER_FIRST_RUNG = 5  # epochs: no judgement before, when good and bad learning rates still overlap
PRUNER_REDUCTION = 4  # a rung keeps the best quarter of the trials that reached it
PRUNER_STARTUP = 5  # complete trials before anyone is pruned (a small study finishes its trials)


def default_pruner() -> optuna.pruners.BasePruner:
    """Successive halving over epochs: at epochs 5, 20, 80, ... a trial goes on only if it is in
    the best quarter of the trials that reached that epoch (all its folds train at every epoch,
    so epochs and fold-epochs grow together), once 5 trials have completed. Measured against
    the median pruner (the default until 0.3) on five shipped studies, five seeds each: it
    reached the median pruner's final CV loss in 0.87x its time (0.75x without the start-up,
    which prunes a small study's second trial; docs/benchmarks.md, "Pruners"). Optuna's own
    default first rung (1 epoch) was slower and worse: one epoch says little about a learning
    rate."""
    return AfterStartup(optuna.pruners.SuccessiveHalvingPruner(min_resource=PRUNER_FIRST_RUNG,
                                                               reduction_factor=PRUNER_REDUCTION), PRUNER_STARTUP)


DEFAULT_BATCH = 1  # slots (--batch); measured: docs/benchmarks.md "Many trials in one stack"
COMPUTE_BOUND_WIDTH = 128  # units: from here a trial's steps are arithmetic, which sharing does not save


def default_batch(spec: Study) -> int:
    """Trials trained at once in shared stacks (slots), when the command line does not say.

    `DEFAULT_BATCH`, set by measurement (benchmarks/bench_engine.py and bench_batch.py), and 1
    when the space makes grouping pointless: every width it allows is compute-bound, where
    one stack of P trials costs what P stacks cost.
    """
    if isinstance(spec.space, Space):
        width = spec.space.width
        narrowest = width.low if isinstance(width, (Int, Float)) else min(
            width.choices) if isinstance(width, Categorical) else width
        if narrowest >= COMPUTE_BOUND_WIDTH:
            return 1
    return DEFAULT_BATCH


def worker_seed(seed: int, n_existing: int, worker: int) -> int:
    """Different sampler seeds for each worker and each resumption, all derived from the study seed."""
    return int(np.random.SeedSequence([seed, n_existing, worker]).generate_state(1)[0])


# --- when is the study done? ---------------------------------------------------------------------
CONVERGED_MIN_TRIALS = 20  # never stop before this many complete trials
CONVERGED_WINDOW = 10  # ...and judge the last max(10, a third of the finished trials)


def converged(trials: list) -> str | None:
    """Why further trials are unlikely to matter (a sentence with the numbers), or None.

    The rule: with at least 20 complete trials, the last max(10, a third of the finished)
    trials improved the best CV loss by less than one standard error of the best trial's
    estimate (its fold spread / sqrt(k)). Improvements below that are within the noise of
    the folds themselves: a later "best" would be a different sample of noise, not a better
    configuration.
    """
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    complete = [t for t in finished if t.state == TrialState.COMPLETE and t.value is not None]
    if len(complete) < CONVERGED_MIN_TRIALS:
        return None
    finished.sort(key=lambda t: t.datetime_complete or t.datetime_start)
    window = max(CONVERGED_WINDOW, len(finished) // 3)
    before = [t for t in finished[:-window] if t.state == TrialState.COMPLETE and t.value is not None]
    if not before:
        return None
    best = min(complete, key=lambda t: t.value)
    earlier = min(t.value for t in before)
    folds = len(best.user_attrs.get("fold_val_losses") or []) or 1
    se = (best.user_attrs.get("cv_loss_std") or 0.0) / np.sqrt(folds)
    gain = earlier - best.value
    if gain >= se:
        return None
    return (f"converged: the last {window} of {len(finished)} finished trials improved the best CV loss by "
            f"{gain:.4g}, less than one standard error of the best trial's estimate ({se:.4g} = fold std / "
            f"sqrt({folds})); best trial #{best.number}, CV loss {best.value:.4f}")

"""The search's defaults: the sampler and the pruner a study gets when it names none.

Below both `run` (one process) and `workers` (many), so that neither imports the other.
"""

from __future__ import annotations

import numpy as np
import optuna

from sweeps.study import Study


def default_sampler(spec: Study, n_existing: int, worker: int = 0) -> optuna.samplers.BaseSampler:
    # Seeding from the trials already stored keeps a resumed study from replaying the first
    # run's random start-up configurations; from the worker index, keeps workers apart.
    # TPE's constant liar (on by default) keeps parallel workers from proposing the same point.
    return optuna.samplers.TPESampler(seed=worker_seed(spec.seed, n_existing, worker), multivariate=True)


def default_pruner() -> optuna.pruners.BasePruner:
    # 5 complete trials before judging anyone, and no judgement in the first 5 epochs,
    # when losses of good and bad learning rates still overlap.
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)


def worker_seed(seed: int, n_existing: int, worker: int) -> int:
    """Different sampler seeds for each worker and each resumption, all derived from the study seed."""
    return int(np.random.SeedSequence([seed, n_existing, worker]).generate_state(1)[0])

"""One trial: suggest a configuration, train all k folds together, report, record.

The trial's value is the mean over folds of each fold's best validation loss. After every
epoch the mean over folds of the best validation loss so far is reported to Optuna: it is
what the trial's value would be if training ended there, so pruners compare like with like.

A trial whose loss becomes NaN or infinite is *pruned*, not failed, with the reason in
`prune_reason`: TPE learns from pruned trials (they rank below complete ones), while it
ignores failed ones and would keep proposing the same diverging region.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import optuna

from sweeps import notes, record
from sweeps.folds import Folds
from sweeps.study import Study
from sweeps.train import NetConfig, train_folds


def trial_seed(study_seed: int, trial_number: int) -> int:
    """Each trial's own seed: reproducible, different for every trial."""
    return int(np.random.SeedSequence([study_seed, trial_number]).generate_state(1)[0])


def make_objective(spec: Study, folds: Folds) -> Callable[[optuna.Trial], float]:
    """The Optuna objective of a study, over folds prepared once per process."""
    def objective(trial: optuna.Trial) -> float:
        config = NetConfig.from_params(spec.suggest(trial))

        def on_epoch(epoch: int, mean_val_loss: float) -> str | None:
            trial.report(mean_val_loss, step=epoch)
            if trial.should_prune():
                pruner_name = type(trial.study.pruner).__name__
                return (f"pruned by {pruner_name} at epoch {epoch}: mean validation loss "
                        f"{mean_val_loss:.4g} was worse than earlier trials at that epoch")
            return None

        try:
            result = train_folds(folds, config, max_epochs=spec.max_epochs, patience=spec.patience,
                                 seed=trial_seed(spec.seed, trial.number), on_epoch=on_epoch)
        except KeyboardInterrupt:
            record.write_fail_reason(trial, "interrupted (Ctrl+C); rerun to resume the study")
            raise
        except Exception as e:  # e.g. out of memory for a very wide net: this trial fails, not the study
            record.write_fail_reason(trial, f"{type(e).__name__}: {e}")
            notes.save_trial_note(trial, notes.trial_note(None, spec.task, f"failed: {type(e).__name__}: {e}"))
            raise
        record.write_trial(trial, result, spec.task)  # the evidence is stored before pruning
        reason = result.diverged or result.interrupted
        notes.save_trial_note(trial, notes.trial_note(result, spec.task, reason))
        if reason:
            raise optuna.TrialPruned(reason)
        return result.cv_loss

    return objective

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

import dataclasses
import os
import socket

from sweeps import notes, record
from sweeps.errors import SweepsError
from sweeps.folds import Folds
from sweeps.model import StackedMLP
from sweeps.study import Int, Space, Study
from sweeps.train import NetConfig, train_folds


def transfer(spec: Study, n_features: int, n_outputs: int) -> tuple[Study, StackedMLP | None]:
    """For `init_from`: the study with depth and width fixed to the saved model's, and its weights.

    Checked before anything is written: the saved model must take the same features and
    give the same outputs as this study's data.
    """
    if spec.init_from is None:
        return spec, None
    from sweeps.trained import load_model

    model = load_model(spec.init_from)
    net = model.net
    depth, width = len(net.weights) - 1, net.weights[0].shape[2]
    if net.weights[0].shape[1] != n_features or net.weights[-1].shape[2] != n_outputs:
        raise SweepsError(
            f"Study.init_from: {spec.init_from} takes {net.weights[0].shape[1]} features and gives "
            f"{net.weights[-1].shape[2]} outputs; this study's data has {n_features} features and needs "
            f"{n_outputs} outputs; transfer needs the same features and target.")
    space = dataclasses.replace(spec.space, depth=Int(depth, depth), width=Int(width, width))
    return dataclasses.replace(spec, space=space), net


def trial_seed(study_seed: int, trial_number: int) -> int:
    """Each trial's own seed: reproducible, different for every trial."""
    return int(np.random.SeedSequence([study_seed, trial_number]).generate_state(1)[0])


def make_objective(spec: Study, folds: Folds) -> Callable[[optuna.Trial], float]:
    """The Optuna objective of a study, over folds prepared once per process."""
    spec, init = transfer(spec, folds.n_features, folds.n_outputs)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    # When the space allows class weighting, balance is what matters: every trial, weighted or
    # not, is then scored by the class-balanced validation loss, so values stay comparable.
    balanced = isinstance(spec.space, Space) and "balanced" in spec.space.class_weight.choices

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr("worker", worker)  # which machine and process ran it
        config = dataclasses.replace(NetConfig.from_params(spec.suggest(trial)), balanced_validation=balanced)

        def on_epoch(epoch: int, mean_val_loss: float) -> str | None:
            trial.report(mean_val_loss, step=epoch)
            if trial.should_prune():
                pruner_name = type(trial.study.pruner).__name__
                return (f"pruned by {pruner_name} at epoch {epoch}: mean validation loss "
                        f"{mean_val_loss:.4g} was worse than earlier trials at that epoch")
            return None

        try:
            result = train_folds(folds, config, max_epochs=spec.max_epochs, patience=spec.patience,
                                 seed=trial_seed(spec.seed, trial.number), on_epoch=on_epoch,
                                 init=init)
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

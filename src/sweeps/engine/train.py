"""The one training engine: all k folds of a trial (and several trials) train together.

`train_trials` puts its trials in one `stack.Stack` and trains it epoch by epoch until every
trial has finished; the loop itself, and how trials join and leave a stack, are there. The
caller's `on_epoch(epoch, mean_val_loss, fold_losses)` hook sees the mean over folds of
each fold's best validation loss so far after every epoch (what Optuna's pruners see) and
may end its trial by returning a reason.
"""

from __future__ import annotations

from collections.abc import Callable

from sweeps.data.folds import Folds
from sweeps.engine.config import NetConfig
from sweeps.engine.model import StackedMLP
from sweeps.engine.scores import FoldResult
from sweeps.engine.stack import Stack

# on_epoch(epoch, mean of the folds' best validation loss so far, each fold's) -> a reason to stop, or None
EpochHook = Callable[[int, float, list], "str | None"]


def train_folds(folds: Folds, config: NetConfig, *, max_epochs: int, patience: int | None,
                seed: int, on_epoch: EpochHook | None = None, compact: bool = True,
                init: StackedMLP | None = None, horizon: int | None = None) -> FoldResult:
    """Train one fold-model per fold of `folds`, together, and return their results.

    `seed` is the trial's seed; each fold derives its own init and batch-order seeds from it
    and its fold id, so a fold trains the same inside the stack or alone. The other
    arguments are `stack.Stack`'s.
    """
    return train_trials(folds, [config], [seed], [on_epoch], max_epochs=max_epochs, patience=patience,
                        compact=compact, init=init, horizon=horizon)[0]


def train_trials(folds: Folds, configs: list[NetConfig], seeds: list[int], on_epochs: list[EpochHook | None], *,
                 max_epochs: int, patience: int | None, compact: bool = True, init: StackedMLP | None = None,
                 horizon: int | None = None) -> list[FoldResult]:
    """Train the k fold-models of each of several trials in one stack; one `FoldResult` per trial.

    The stack holds trial t's fold f at one position: weights [trials x k, ...]. Trials of
    different widths are padded to the widest (`StackedMLP.concat`: padded units stay 0);
    each trial keeps its own learning rate, weight decay, beta2 and schedule (one AdamW
    kernel call per trial), dropout, label smoothing, Huber threshold, noise, class weights and gradient
    clipping (per position), and its own random streams: a trial trains as it would alone
    (`tests/engine`). Each trial reports, is pruned and stops on its own; a pruned trial or a
    stopped fold leaves the stack.
    """
    stack = Stack(folds, max_epochs=max_epochs, patience=patience, compact=compact, init=init, horizon=horizon)
    stack.add(configs, seeds, on_epochs)
    results: dict[int, FoldResult] = {}
    while stack.training:
        results.update(stack.epoch())
    return [results[t] for t in range(len(configs))]

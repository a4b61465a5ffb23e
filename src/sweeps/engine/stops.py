"""After each epoch of a stack: validation, best weights, early stopping, each trial's hook.

Keeps, per stack position (live or not): the best validation loss and epoch, and the best
weights (`best`, one row per position of a trial still training: `kept`). `after_epoch`
says which positions leave the stack and which trials are finished; `result` scores a
finished trial at its best weights. Folds without validation rows (a final fit) train every
epoch, and their last weights are the model.

Each trial counts its own epochs (a trial that joined a stack in training starts at 1), so
its curves, patience, `max_epochs` and the epochs its hook sees are what they would be alone.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sweeps.data.folds import Folds
from sweeps.engine.config import NetConfig
from sweeps.engine.model import StackedMLP
from sweeps.engine.positions import Positions, of_folds
from sweeps.engine.scores import EVAL_CHUNK, FoldResult, final_scores, mean_losses, nan_mean, worst_of
from sweeps.engine.weights import RowWeights


class Stops:
    def __init__(self, folds: Folds, configs: list[NetConfig], positions: Positions, patience: int | None,
                 max_epochs: int, compact: bool) -> None:
        self.folds, self.configs, self.positions = folds, configs, positions
        self.patience, self.max_epochs, self.compact = patience, max_epochs, compact
        self.results: list[FoldResult] = []  # per trial
        self.hooks: list = []  # per trial: its epoch hook, or None
        self.best_val: list[float] = []  # per position
        self.best_epoch: list[int] = []
        self.done: list[bool] = []  # only used when masking: stopped folds still in the stack
        self.finished: list[bool] = []  # per trial: pruned, diverged, or every fold of it stopped
        self.best: StackedMLP | None = None  # the best weights of the positions in `kept`
        self.kept: list[int] = []

    def add(self, stacks: list[StackedMLP], positions: list[int], hooks: list) -> None:
        """Trials join (their initial stacks, the positions they take, their epoch hooks)."""
        k = self.folds.k
        self.hooks += hooks
        for stack in stacks:
            self.results.append(FoldResult([], [], [], [], [f"reached max_epochs={self.max_epochs}"] * k,
                                           n_params=stack.n_params, fold_curves=[[] for _ in range(k)]))
            self.finished.append(False)
        self.best_val += [math.inf] * len(positions)
        self.best_epoch += [0] * len(positions)
        self.done += [False] * len(positions)
        if self.folds.has_validation:  # a final fit's model is its last weights: nothing to keep
            self.best = StackedMLP.concat(([self.best] if self.best is not None else []) + [s.clone() for s in stacks])
            self.kept += positions

    def after_epoch(self, epochs: list[int], train: list[float], model: StackedMLP,
                    weights: RowWeights) -> tuple[list[int], list[int]]:
        """The epoch every live trial just trained (`epochs`: each trial's own count): the
        positions that leave the stack, and the trials that finished."""
        train_of = dict(zip(self.positions.live, train))
        if not self.folds.has_validation:
            return self._final_fit_epoch(epochs, train_of)
        val, by_group = self._validate(model, weights)
        val_of = dict(zip(self.positions.live, val))
        leaving: list[int] = []
        finished: list[int] = []
        for t, _ in self.positions.runs():
            if self.finished[t]:
                continue
            leaving += self._trial_epoch(t, epochs[t], train_of, val_of, by_group, model)
            if epochs[t] >= self.max_epochs:
                self.finished[t] = True
            if self.finished[t]:
                finished.append(t)
                leaving += [p for p in self.positions.live if self.positions.owner[p] == t and p not in leaving]
        if not self.compact:
            for p in leaving:
                self.done[p] = True  # masking: it keeps computing, its results are ignored
            leaving = [p for p in leaving if self.positions.owner[p] in finished]
        return leaving, finished

    def _final_fit_epoch(self, epochs: list[int], train_of: dict[int, float]) -> tuple[list[int], list[int]]:
        """A final fit: fixed epochs, the last weights are the model."""
        live, owner = self.positions.live, self.positions.owner
        finished = []
        for t, _ in self.positions.runs():
            values = [train_of[p] for p in live if owner[p] == t]
            self.results[t].curve_train.append(float(np.mean(values)))
            if not all(map(math.isfinite, values)):
                self.results[t].diverged = f"diverged: the training loss became non-finite at epoch {epochs[t]}"
                self.finished[t] = True
            if epochs[t] >= self.max_epochs:
                self.finished[t] = True
            if self.finished[t]:
                finished.append(t)
        return [p for p in live if owner[p] in finished], finished

    def _validate(self, model: StackedMLP, weights: RowWeights) -> tuple[list[float], torch.Tensor | None]:
        """Every live fold with its current weights (no dropout): its loss, and per group."""
        folds, now = self.folds, self.positions.folds_now()
        val, by_group = mean_losses(
            model.predict(of_folds(folds.X_val, now), EVAL_CHUNK, folds.classification), of_folds(folds.y_val, now),
            of_folds(folds.val_weight, now), folds.classification, weights.validation(),
            None if folds.val_groups is None else of_folds(folds.val_groups, now), len(folds.group_names))
        if self.configs[0].worst_group:  # folds stop on (and the trial is scored by) their worst group
            val = worst_of(by_group)
        return val.tolist(), by_group

    def _trial_epoch(self, t: int, epoch: int, train_of: dict, val_of: dict, by_group: torch.Tensor | None,
                     model: StackedMLP) -> list[int]:
        """Trial t's epoch: curves, divergence, best weights, early stopping, its hook. Returns its
        positions that leave the stack."""
        live, fold_of, result = self.positions.live, self.positions.fold_of, self.results[t]
        mine = [p for p in live if self.positions.owner[p] == t and not self.done[p]]
        if not mine:
            return []
        for p in mine:
            result.fold_curves[fold_of[p]].append(val_of[p])
        result.curve_train.append(float(np.mean([train_of[p] for p in mine])))
        result.curve_val.append(float(np.mean([val_of[p] for p in mine])))
        if by_group is not None:  # per group, the mean over the trial's training folds
            result.group_curve_val.append(nan_mean(by_group[self.positions.index([live.index(p) for p in mine])]))
        bad = [fold_of[p] for p in mine if not (math.isfinite(train_of[p]) and math.isfinite(val_of[p]))]
        if bad:
            result.diverged = f"diverged: the loss of fold {bad[0]} became non-finite at epoch {epoch}"
            for p in mine:
                result.stop_reasons[fold_of[p]] = f"trial ended at epoch {epoch}: a fold diverged"
            self.finished[t] = True
            return mine
        improved = [p for p in mine if val_of[p] < self.best_val[p]]
        for p in improved:
            self.best_val[p], self.best_epoch[p] = val_of[p], epoch
        if improved:
            _copy_positions(self.best, model, [live.index(p) for p in improved], [self.kept.index(p) for p in improved])
        stopping = []
        if self.patience is not None:
            stopping = [p for p in mine if epoch - self.best_epoch[p] >= self.patience]
            for p in stopping:
                result.stop_reasons[fold_of[p]] = (
                    f"early stop at epoch {epoch}: no better validation loss for {self.patience} epochs")
        trial_best = [self.best_val[p] for p in self.positions.of_trial(t)]
        reported = float(np.mean(trial_best))
        result.reported.append(reported)
        hook = self.hooks[t]
        reason = hook(epoch, reported, trial_best) if hook is not None else None
        if reason:
            result.interrupted = reason
            for p in mine:
                if p not in stopping:
                    result.stop_reasons[fold_of[p]] = f"trial ended at epoch {epoch} by the epoch hook (pruning)"
            self.finished[t] = True
            return mine
        if len(stopping) == len(mine) and all(self.done[p] or p in stopping
                                              for p in live if self.positions.owner[p] == t):
            self.finished[t] = True
        return stopping

    def result(self, t: int, model: StackedMLP, width: int, weights: RowWeights) -> FoldResult:
        """Finished trial t's result, scored at its best weights (a final fit: its last, in `model`)."""
        config, result, positions = self.configs[t], self.results[t], list(self.positions.of_trial(t))
        if self.folds.has_validation:
            own = self.best.select(self.positions.index([self.kept.index(p) for p in positions]))
        else:
            own = model.select(self.positions.index([self.positions.live.index(p) for p in positions]))
        result.model = own.crop(width, config.dropout)
        final_scores(result, result.model, self.folds, [self.best_epoch[p] for p in positions],
                     weights.balanced_classes, config.worst_group)
        return result

    def forget(self, trials: list[int]) -> None:
        """Finished trials' results (taken), hooks and best weights, dropped."""
        for t in trials:
            self.results[t] = self.hooks[t] = None
        if self.best is None:
            return
        keep = [i for i, p in enumerate(self.kept) if self.positions.owner[p] not in trials]
        self.kept = [self.kept[i] for i in keep]
        self.best = self.best.select(self.positions.index(keep)) if keep else None


def _copy_positions(dst: StackedMLP, src: StackedMLP, positions: list[int], rows: list[int]) -> None:
    """dst[rows] = src[positions], for every tensor (the best weights so far)."""
    device = src.weights[0].device
    src_index = torch.tensor(positions, device=device)
    dst_index = torch.tensor(rows, device=device)
    for d, s in zip(dst.params, src.params):
        d.index_copy_(0, dst_index, s.index_select(0, src_index))

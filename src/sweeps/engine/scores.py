"""What training produced, and how it is scored: per-fold losses and metrics at each fold's best
weights, per group, and the honest CV estimate.

Losses are weighted means over a fold's real rows (`Folds.*_weight`: 0 on padding), with
the validation's class weighting where the study balances classes; metrics are accuracy,
balanced accuracy and macro-F1 (classification) or RMSE in the target's units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from sweeps.data.folds import Folds
from sweeps.engine.losses import per_row_losses
from sweeps.engine.model import StackedMLP

EVAL_CHUNK = 16384  # rows per forward pass when validating: bounds memory on big tables


@dataclass
class FoldResult:
    """What training all folds of one configuration produced (per-fold lists in fold order)."""

    val_losses: list[float]  # each fold's best validation loss
    train_losses: list[float]  # each fold's training loss at its best epoch (eval mode, no dropout)
    metrics: list[float]  # accuracy (classification) or RMSE in target units (regression)
    best_epochs: list[int]  # 1-based epoch of each fold's best validation loss
    stop_reasons: list[str]
    curve_train: list[float] = field(default_factory=list)  # per epoch: mean minibatch loss of training folds
    curve_val: list[float] = field(default_factory=list)  # per epoch: mean validation loss of training folds
    reported: list[float] = field(default_factory=list)  # per epoch: what on_epoch saw
    fold_curves: list[list[float]] = field(default_factory=list)  # per fold, per epoch it trained: validation loss
    interrupted: str | None = None  # the hook's reason, if it ended training
    diverged: str | None = None  # set when a loss became NaN or infinite
    n_params: int = 0
    seconds: float = 0.0
    model: StackedMLP | None = None  # the best weights of every fold
    balanced_accuracies: list[float] = field(default_factory=list)  # classification only
    macro_f1s: list[float] = field(default_factory=list)  # classification only
    # Study(groups=): per fold, per group (Folds.group_names), at the best weights; NaN where a
    # fold's validation rows hold none of the group
    group_val_losses: list[list[float]] = field(default_factory=list)
    group_metrics: list[list[float]] = field(default_factory=list)  # accuracy, or RMSE in target units
    group_curve_val: list[list[float]] = field(default_factory=list)  # per epoch, per group: mean over folds
    # Each fold's outputs on its validation rows at its best weights [k, n_val, outputs] (logits, or
    # the members' log mean probability; standardized targets for regression); padding rows included
    val_outputs: torch.Tensor | None = None

    @property
    def cv_loss(self) -> float:
        return float(np.mean(self.val_losses))

    @property
    def honest_cv_loss(self) -> float | None:
        """The CV loss with each fold's stopping epoch chosen on the *other* folds (see `honest_cv`)."""
        return honest_cv(self.fold_curves)


def honest_cv(fold_curves: list[list[float]]) -> float | None:
    """A CV estimate whose stopping epoch was not chosen on the fold it scores.

    Early stopping keeps each fold's best epoch, chosen on that fold's own validation rows,
    which then score it: the CV loss is optimistic (skorch#837, sklearn#1626). Here fold f is
    scored at the epoch where the mean of the *other* folds' validation curves is lowest
    (among the epochs every one of them trained, and fold f too): leave-one-fold-out
    selection of the epoch. The difference to the CV loss is the optimism of early stopping.
    """
    scores = honest_folds(fold_curves)
    if scores is None:
        return None
    value = float(np.mean(scores))
    return value if math.isfinite(value) else None


def honest_folds(fold_curves: list[list[float]]) -> list[float] | None:
    """Each fold's loss at the epoch the other folds chose (`honest_cv`'s terms, fold by fold:
    two trials on the same folds are compared pair by pair)."""
    k = len(fold_curves)
    if k < 2 or any(not c for c in fold_curves):
        return None
    scores = []
    for f, curve in enumerate(fold_curves):
        others = [c for g, c in enumerate(fold_curves) if g != f]
        epochs = min(len(curve), *(len(c) for c in others))
        mean_others = np.mean([c[:epochs] for c in others], axis=0)
        scores.append(float(curve[int(np.argmin(mean_others))]))
    return scores


def mean_losses(out: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, classification: bool,
                 class_weight: torch.Tensor | None = None, groups: torch.Tensor | None = None,
                 n_groups: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each position's weighted mean loss [P] of the predictions `out`, and with `groups`
    (one per row, -1: none) its mean loss per group [P, G] (`group_means`)."""
    losses = per_row_losses(out, y, classification)
    weight = _class_weighted(weight, y, class_weight)
    mean = (losses * weight).sum(1) / weight.sum(1)
    return mean, None if groups is None else group_means(losses, weight, groups, n_groups)


def _class_weighted(weight: torch.Tensor, y: torch.Tensor, class_weight: torch.Tensor | None) -> torch.Tensor:
    """Each row's weight, times its class's where classes are weighted (validation weighs them as training does)."""
    return weight if class_weight is None else weight * class_weight.gather(1, y)


def worst_of(by_group: torch.Tensor) -> torch.Tensor:
    """Each position's largest group loss (groups it has no rows of left out)."""
    return torch.nan_to_num(by_group, nan=-math.inf).amax(1)


def group_means(values: torch.Tensor, weight: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Per stack position and group, the weighted mean of `values` [P, n] over its rows of that
    group (`groups` [P, n], -1: no group); NaN for a group a position has no rows of."""
    weight = weight * (groups >= 0)
    index = groups.clamp(min=0)
    contributions = values * weight
    sums = torch.zeros(values.shape[0], n_groups, dtype=contributions.dtype, device=values.device).scatter_add_(
        1, index, contributions)
    totals = torch.zeros_like(sums).scatter_add_(1, index, weight.to(sums.dtype))
    return torch.where(totals > 0, sums / totals.clamp(min=1e-30), torch.full_like(sums, math.nan))


def nan_mean(rows: torch.Tensor) -> list[float]:
    """Column means ignoring NaN; NaN where a column has no number."""
    present = ~rows.isnan()
    return torch.where(present.any(0), torch.nan_to_num(rows).sum(0) / present.sum(0).clamp(min=1),
                       torch.full_like(rows[0], math.nan)).tolist()


def _mean_loss_in_chunks(model, X, y: torch.Tensor, weight: torch.Tensor, classification: bool,
                         class_weight: torch.Tensor | None) -> torch.Tensor:
    """`mean_losses` of the model's predictions of X, a chunk of rows at a time: the
    predictions of every training row at once are [k, rows, outputs] floats, plus the losses'
    temporaries, several times that (on 5 folds of 2.4 million rows, about 350 MB)."""
    total = count = 0.0
    for start in range(0, max(X.shape[1], 1), EVAL_CHUNK):
        rows = slice(start, start + EVAL_CHUNK)
        out = model.predict(X[:, rows], EVAL_CHUNK, classification)
        losses = per_row_losses(out, y[:, rows], classification)
        w = _class_weighted(weight[:, rows], y[:, rows], class_weight)
        total = total + (losses * w).sum(1)
        count = count + w.sum(1)
    return total / count


@torch.no_grad()
def final_scores(result: FoldResult, best: StackedMLP, folds: Folds, best_epoch: list[int],
                  class_weight: torch.Tensor | None = None, worst_group: bool = False) -> None:
    """Per-fold losses and metrics of the best weights: validation and (clean) training loss.

    Both losses use the validation's class weighting, so their gap is on one scale.
    """
    result.train_losses = _mean_loss_in_chunks(best, folds.X_train, folds.y_train, folds.train_weight,
                                               folds.classification, class_weight).tolist()
    if not folds.has_validation:
        result.best_epochs = [len(result.curve_train)] * folds.k
        return
    out = best.predict(folds.X_val, EVAL_CHUNK, folds.classification)
    result.val_outputs = out.cpu()  # the out-of-fold predictions an ensemble is selected on
    w = folds.val_weight
    plain, by_group = mean_losses(out, folds.y_val, w, folds.classification, class_weight, folds.val_groups,
                                   len(folds.group_names))
    result.val_losses = (worst_of(by_group) if worst_group else plain).tolist()
    if by_group is not None:
        result.group_val_losses = by_group.tolist()
        if folds.classification:
            per_row = (out.argmax(-1) == folds.y_val).float()
        else:
            per_row = per_row_losses(out, folds.y_val, False)
        metric = group_means(per_row, w, folds.val_groups, len(folds.group_names))
        if not folds.classification:  # RMSE in target units, per group
            metric = metric.sqrt() * folds.target_std.unsqueeze(1)
        result.group_metrics = metric.tolist()
    if folds.classification:
        pred = out.argmax(-1)
        correct = (pred == folds.y_val).float()
        result.metrics = ((correct * w).sum(1) / w.sum(1)).tolist()
        for f in range(folds.k):
            real = w[f].bool()
            balanced, f1 = _balanced_scores(folds.y_val[f][real], pred[f][real], folds.n_outputs)
            result.balanced_accuracies.append(balanced)
            result.macro_f1s.append(f1)
    else:
        result.metrics = (plain.sqrt() * folds.target_std).tolist()
    result.best_epochs = list(best_epoch)


def _balanced_scores(y: torch.Tensor, pred: torch.Tensor, n_classes: int) -> tuple[float, float]:
    """Balanced accuracy (mean recall) and macro-F1 over the classes present in `y`."""
    confusion = torch.bincount(y * n_classes + pred, minlength=n_classes**2).reshape(n_classes, n_classes).double()
    true, predicted, hit = confusion.sum(1), confusion.sum(0), confusion.diag()
    present = true > 0
    recall = hit[present] / true[present]
    precision = torch.where(predicted[present] > 0, hit[present] / predicted[present].clamp(min=1), 0.0)
    f1 = torch.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return float(recall.mean()), float(f1.mean())

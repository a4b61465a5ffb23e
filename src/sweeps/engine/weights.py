"""What each training row weighs in the loss, and how validation weighs classes.

- `class_weight="balanced"` (per trial): each row weighs its class's n / (classes x count),
  counted on its fold's training part;
- `importance="density_ratio"` (`Study(target_data=)`): each row weighs its density ratio
  (`data.importance`, fitted per fold);
- a study whose space balances classes (`Study.balanced_validation`) scores every trial's
  validation by the class-balanced loss, whatever the trial trained with, so that every
  trial's value is on one scale.
"""

from __future__ import annotations

import torch

from sweeps.data.folds import Folds
from sweeps.engine.config import NetConfig
from sweeps.engine.positions import Positions


class RowWeights:
    """The row weights of a stack's live positions (`configs` grows as trials join the stack)."""

    def __init__(self, folds: Folds, configs: list[NetConfig], positions: Positions) -> None:
        self.folds, self.configs, self.positions = folds, configs, positions
        self.members = configs[0].ensemble
        self.balanced = class_weights(folds) if folds.classification else None  # [k, classes]
        self.balanced_classes = self.balanced if configs[0].balanced_validation else None  # final scores
        if configs[0].importance != "none" and folds.train_importance is None:
            raise ValueError("train_trials: importance weighting needs folds made with target rows")

    def epoch(self, order: torch.Tensor) -> EpochWeights:
        """The weights of an epoch whose rows are `order` [live positions, rows]."""
        owner, folds_now = self.positions.owner, self.positions.folds_now()
        live = self.positions.live
        classes = None  # [live positions, classes], once per epoch, not per step
        if self.balanced is not None and any(self.configs[owner[p]].class_weight == "balanced" for p in live):
            weighted = torch.tensor([self.configs[owner[p]].class_weight == "balanced" for p in live],
                                    device=self.balanced.device)
            classes = torch.where(weighted.unsqueeze(1), self.balanced[folds_now], 1.0)
        rows = None
        if self.configs[0].importance != "none":
            rows = self.folds.train_importance[folds_now].gather(1, order)
        return EpochWeights(classes, rows, self.members)

    def validation(self) -> torch.Tensor | None:
        """The live positions' class weights for validation (None: plain)."""
        if self.balanced_classes is None:
            return None
        return self.balanced_classes[self.positions.folds_now()]


class EpochWeights:
    def __init__(self, classes: torch.Tensor | None, rows: torch.Tensor | None, members: int) -> None:
        self.classes, self.rows, self.members = classes, rows, members

    def batch(self, rows: slice) -> torch.Tensor | None:
        """Each row's importance in a batch, once per member (every member learns from the same rows)."""
        if self.rows is None:
            return None
        return self.rows[:, rows] if self.members == 1 else self.rows[:, rows].repeat(1, self.members)


def class_weights(folds: Folds) -> torch.Tensor:
    """Per fold, "balanced" class weights from its training part: n / (classes x count)."""
    # The folds' real training rows per class (not their top-up repeats), counted once when the folds are made.
    counts = torch.as_tensor(folds.split_class_counts[folds.fold_ids], device=folds.y_train.device)
    return counts.sum(1, keepdim=True) / (folds.n_outputs * counts.clamp(min=1)).float()

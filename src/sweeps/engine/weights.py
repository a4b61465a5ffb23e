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
    def __init__(self, folds: Folds, configs: list[NetConfig], positions: Positions) -> None:
        owner, fold_of = positions.owner, positions.fold_of
        self.positions = positions
        self.members = configs[0].ensemble
        balanced = class_weights(folds) if folds.classification else None
        self.validation_classes = balanced[fold_of] if configs[0].balanced_validation and balanced is not None \
            else None  # [positions, classes]
        self.balanced_classes = balanced if configs[0].balanced_validation else None  # [k, classes], final scores
        weighted = [c.class_weight == "balanced" for c in configs]
        self.classes = None  # [positions, classes]
        if balanced is not None and any(weighted):
            self.classes = torch.stack([balanced[f] if weighted[t] else torch.ones_like(balanced[f])
                                        for t, f in zip(owner, fold_of)])
        self.importance = None  # [positions, n_train]
        if configs[0].importance != "none":
            if folds.train_importance is None:
                raise ValueError("train_trials: importance weighting needs folds made with target rows")
            self.importance = folds.train_importance[fold_of]

    def epoch(self, order: torch.Tensor) -> EpochWeights:
        """The weights of an epoch whose rows are `order` [live positions, rows]."""
        live_at = self.positions.index(self.positions.live)
        classes = None if self.classes is None else self.classes[live_at]  # once per epoch, not per step
        rows = None if self.importance is None else self.importance[live_at].gather(1, order)
        return EpochWeights(classes, rows, self.members)

    def validation(self) -> torch.Tensor | None:
        """The live positions' class weights for validation (None: plain)."""
        if self.validation_classes is None:
            return None
        return self.validation_classes[self.positions.index(self.positions.live)]


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
    weights = []
    for f in range(folds.k):
        y = folds.y_train[f][folds.train_weight[f].bool()]
        counts = torch.bincount(y, minlength=folds.n_outputs).float()
        weights.append(len(y) / (folds.n_outputs * counts.clamp(min=1)))
    return torch.stack(weights)

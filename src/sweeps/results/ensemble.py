"""Ensemble selection over the trials of a study (Caruana et al. 2004), on out-of-fold predictions.

Greedy forward selection with replacement: start from the best single trial, then add, one
at a time, the trial whose inclusion lowers the loss of the average the most, `ROUNDS`
times; a trial's weight is how often it was added over the rounds. The loss is the study's:
cross-entropy of the averaged class probabilities (class-balanced where the study scores
trials so), or the squared error of the averaged predictions in each fold's standardized
units (the CV loss's).

The selection sees the rows it is scored on, so its out-of-fold loss is optimistic. The
honest estimate selects on k − 1 folds' rows and scores the k-th fold's, for each fold in
turn, as `honest_cv_loss` does for early stopping.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROUNDS = 25  # additions of the greedy selection (AutoGluon's default ensemble size)
EPS = 1e-7  # probabilities are clipped this far from 0 for the log


@dataclass
class Selection:
    trials: list[int]  # the chosen trials, by weight
    weights: list[float]  # each one's share of the average (they sum to 1)
    oof_loss: float  # the ensemble's loss on the rows it was selected on (optimistic)
    honest_loss: float  # selected on the other folds' rows, scored on each fold's (see the docstring)
    best_single_loss: float  # the best trial's own out-of-fold loss, in the same units


def row_losses(prediction: np.ndarray, y: np.ndarray, classification: bool, scale: np.ndarray) -> np.ndarray:
    """Each row's loss of a prediction: -log p(y) of probabilities [rows, C], or the squared error
    of predictions [rows, 1] divided by `scale` (each row's fold's target variance)."""
    if classification:
        return -np.log(np.clip(prediction[np.arange(len(y)), y], EPS, 1.0))
    return (prediction[:, 0] - y) ** 2 / scale


def select(oofs: list[np.ndarray], y: np.ndarray, classification: bool, weight: np.ndarray, scale: np.ndarray,
           rows: np.ndarray | None = None, rounds: int = ROUNDS) -> np.ndarray:
    """How often each candidate is chosen in `rounds` greedy additions, on `rows` (default: all)."""
    rows = np.arange(len(y)) if rows is None else rows
    preds = [o[rows].astype(np.float64) for o in oofs]
    target, w, s = y[rows], weight[rows], scale[rows]

    def loss(prediction: np.ndarray) -> float:
        return float(np.sum(row_losses(prediction, target, classification, s) * w) / np.sum(w))

    counts = np.zeros(len(oofs), dtype=np.int64)
    total = np.zeros_like(preds[0])
    for r in range(rounds):
        scores = [loss((total + p) / (r + 1)) for p in preds]
        best = int(np.argmin(scores))  # ties: the better-ranked trial (candidates come best first)
        counts[best] += 1
        total += preds[best]
    return counts


def ensemble_selection(trials: list[int], oofs: list[np.ndarray], y: np.ndarray, classification: bool,
                       weight: np.ndarray, scale: np.ndarray, fold_of_row: np.ndarray) -> Selection:
    """Select on every development row, and estimate honestly by rotating the folds."""
    counts = select(oofs, y, classification, weight, scale)

    def loss_of(counts: np.ndarray, rows: np.ndarray) -> float:
        prediction = sum(c * o[rows].astype(np.float64) for c, o in zip(counts, oofs) if c) / counts.sum()
        return float(np.sum(row_losses(prediction, y[rows], classification, scale[rows]) * weight[rows])
                     / np.sum(weight[rows]))

    every = np.arange(len(y))
    folds = [every[fold_of_row == f] for f in np.unique(fold_of_row)]

    def cv_loss(counts: np.ndarray) -> float:  # the mean over folds of each fold's loss, as a trial's value
        return float(np.mean([loss_of(counts, rows) for rows in folds]))

    honest = [loss_of(select(oofs, y, classification, weight, scale, rows=every[fold_of_row != fold_of_row[rows[0]]]),
                      rows) for rows in folds]
    order = np.argsort(-counts, kind="stable")
    keep = [i for i in order if counts[i]]
    singles = [cv_loss(np.eye(len(oofs), dtype=np.int64)[i]) for i in range(len(oofs))]
    return Selection([trials[i] for i in keep], [float(counts[i] / counts.sum()) for i in keep],
                     cv_loss(counts), float(np.mean(honest)), float(min(singles)))

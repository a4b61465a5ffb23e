"""Importance weights for covariate shift: how much more likely a training row is under the
target rows (`Study(target_data=)`) than under the training rows themselves.

A domain classifier (logistic regression on the fold's preprocessed features) tells the
fold's training rows from the target rows; for a row x with p = P(target | x), the density
ratio is p / (1 - p) (classes balanced in the fit, so the priors cancel). Ratios are clipped
to [1 / MAX_RATIO, MAX_RATIO], because a few extreme weights would otherwise make the
weighted loss a handful of rows (the classic failure of importance weighting), then scaled
to mean 1 over the fold's real training rows, so the learning rate keeps its meaning. Fitted
per fold on that fold's training part and the target rows only: never on validation or test
rows.
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

MAX_RATIO = 10.0
MAX_ROWS = 20_000  # per side: the classifier's fit stays a second or so on big tables


def density_ratios(train: np.ndarray, target: np.ndarray, real: np.ndarray, seed: int) -> np.ndarray:
    """Per row of `train` (float32 features), its clipped density ratio; mean 1 over the rows
    where `real` is True (the others are top-up repeats)."""
    rng = np.random.default_rng(seed)
    source = train[real]
    if len(source) > MAX_ROWS:
        source = source[rng.choice(len(source), MAX_ROWS, replace=False)]
    if len(target) > MAX_ROWS:
        target = target[rng.choice(len(target), MAX_ROWS, replace=False)]
    X = np.concatenate([source, target])
    y = np.r_[np.zeros(len(source)), np.ones(len(target))]
    classifier = LogisticRegression(C=1.0, max_iter=1000, class_weight="balanced").fit(X, y)
    log_odds = classifier.decision_function(train)  # log(p / (1 - p)) = log of the density ratio
    ratios = np.exp(np.clip(log_odds, -np.log(MAX_RATIO), np.log(MAX_RATIO)))
    return (ratios / ratios[real].mean()).astype(np.float32)

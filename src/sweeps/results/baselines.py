"""Simple models fitted on a study's own folds: what loss is reachable without a deep net.

The methodology's first step against optimization failure and model bias: fit shallow and
non-deep models on the same data, to learn what training loss is reachable. They see
exactly the rows and preprocessing of each fold (`Folds` tensors), and their losses are
in the trials' units: cross-entropy, or MSE of the fold-standardized target.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import log_loss
from sklearn.svm import SVC, SVR

from sweeps.data.folds import Folds
from sweeps.engine.weights import class_weights

# SVC/SVR cost grows with the square of the rows; beyond this many rows per fold they see a
# seeded sample (their losses are then a slight overestimate of what an SVM reaches).
SVM_MAX_ROWS = 5000


def _fold_arrays(folds: Folds, f: int) -> tuple[np.ndarray, ...]:
    train = folds.train_weight[f].bool().cpu().numpy()
    val = folds.val_weight[f].bool().cpu().numpy()
    return (folds.X_train[f].cpu().numpy()[train], folds.y_train[f].cpu().numpy()[train],
            folds.X_val[f].cpu().numpy()[val], folds.y_val[f].cpu().numpy()[val])


def _models(classification: bool, seed: int, balanced: bool = False) -> dict[str, object]:
    if classification:
        weighting = "balanced" if balanced else None  # n / (classes x count): the nets' class_weight
        return {"logistic regression": LogisticRegression(max_iter=2000, class_weight=weighting),
                "SVM (SVC, RBF)": SVC(probability=True, random_state=seed, class_weight=weighting)}
    return {"ridge regression": Ridge(alpha=1.0), "SVM (SVR, RBF)": SVR()}


def fit_baselines(folds: Folds, seed: int, balanced: bool = False) -> dict[str, dict[str, float]]:
    """Train and validation loss (mean and std over folds) and metric of each simple model.

    `balanced` (a study that scores its trials by the class-balanced loss: `Study.balanced_validation`):
    the baselines are fitted with balanced class weights and their losses are class-balanced
    too, as the trials' are; compared with plain losses the nets would look several times
    worse than they are (mammography: 0.21 against 0.06)."""
    results: dict[str, dict[str, list[float]]] = {}
    labels = list(range(folds.n_outputs))
    rng = np.random.default_rng(seed)
    # The trials' own class weights (counted on each fold's training part), when they weigh classes.
    weights = class_weights(folds).cpu().numpy() if balanced and folds.classification else None
    for f in range(folds.k):
        X, y, X_val, y_val = _fold_arrays(folds, f)
        for name, model in _models(folds.classification, seed, balanced).items():
            X_fit, y_fit = X, y
            if name.startswith("SVM") and len(X) > SVM_MAX_ROWS:
                rows = rng.choice(len(X), SVM_MAX_ROWS, replace=False)
                X_fit, y_fit = X[rows], y[rows]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                warnings.simplefilter("ignore", FutureWarning)
                model.fit(X_fit, y_fit)
            entry = results.setdefault(name, {"train": [], "val": [], "metric": []})
            if folds.classification:
                entry["train"].append(log_loss(y, model.predict_proba(X), labels=labels,
                                               sample_weight=None if weights is None else weights[f][y]))
                entry["val"].append(log_loss(y_val, model.predict_proba(X_val), labels=labels,
                                             sample_weight=None if weights is None else weights[f][y_val]))
                entry["metric"].append(float((model.predict(X_val) == y_val).mean()))
            else:
                entry["train"].append(float(np.mean((model.predict(X) - y) ** 2)))
                mse = float(np.mean((model.predict(X_val) - y_val) ** 2))
                entry["val"].append(mse)
                entry["metric"].append(float(np.sqrt(mse) * folds.target_std[f].item()))
    return {name: {"train_loss": float(np.mean(v["train"])), "train_loss_std": float(np.std(v["train"])),
                   "val_loss": float(np.mean(v["val"])), "val_loss_std": float(np.std(v["val"])),
                   "metric": float(np.mean(v["metric"]))}
            for name, v in results.items()}


def chance_loss(folds: Folds, balanced: bool = False) -> float:
    """The loss of predicting without features: class-frequency entropy, or 1.0 (standardized
    MSE); on the class-balanced scale, log(classes): there every class weighs alike, and the
    best prediction without features is the uniform one."""
    if not folds.classification:
        return 1.0
    if balanced:
        return float(np.log(folds.n_outputs))
    entropies = []
    for f in range(folds.k):
        y = folds.y_train[f][folds.train_weight[f].bool()].cpu().numpy()
        p = np.bincount(y, minlength=folds.n_outputs) / len(y)
        p = p[p > 0]
        entropies.append(float(-(p * np.log(p)).sum()))
    return float(np.mean(entropies))

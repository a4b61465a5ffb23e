"""The only writer and reader of what sweeps stores on Optuna trials and studies.

Everything is a plain user attr, so `optuna.load_study(...).trials[i].user_attrs` and
optuna-dashboard show it without sweeps installed. Names are plural for per-fold lists.

Trial user attrs (complete and pruned trials):
    fold_val_losses, fold_train_losses   per fold, at each fold's best epoch
    cv_loss_std, train_loss, train_loss_std
    best_epochs, stop_reasons           per fold
    metric_name, fold_metrics, metric, metric_std   accuracy or rmse
    fold_balanced_accuracies, balanced_accuracy, macro_f1   classification
    n_params, seconds, epochs
    curve_train, curve_val              per epoch, mean over the folds still training
    prune_reason / fail_reason          why a trial did not complete
    worker                              host:pid of the process that ran it

Study user attrs: sweeps_version, settings (task, folds, seed, ...), fingerprint
(data and held-out test hashes), metric_name, classes.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna

from sweeps.data import Dataset
from sweeps.errors import SweepsError
from sweeps.study import Study
from sweeps.train import FoldResult

OBJECTIVE_NAME = "cv_loss"


def metric_name(task: str) -> str:
    return "accuracy" if task == "classification" else "rmse"


def _finite(values: list[float]) -> list[float | None]:
    # JSON has no NaN: a diverged fold's loss is stored as null.
    return [float(v) if math.isfinite(v) else None for v in values]


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    array = np.asarray(values, dtype=float)
    if not np.isfinite(array).all():
        return None, None
    return float(array.mean()), float(array.std())


def write_trial(trial: optuna.Trial, result: FoldResult, task: str) -> None:
    """Store a finished training run's evidence on its trial (before it is told)."""
    _, cv_std = _mean_std(result.val_losses)
    train_mean, train_std = _mean_std(result.train_losses)
    metric, metric_std = _mean_std(result.metrics)
    attrs: dict[str, Any] = {
        "fold_val_losses": _finite(result.val_losses),
        "fold_train_losses": _finite(result.train_losses),
        "cv_loss_std": cv_std,
        "train_loss": train_mean,
        "train_loss_std": train_std,
        "best_epochs": result.best_epochs,
        "stop_reasons": result.stop_reasons,
        "metric_name": metric_name(task),
        "fold_metrics": _finite(result.metrics),
        "metric": metric,
        "metric_std": metric_std,
        "n_params": result.n_params,
        **({"fold_balanced_accuracies": _finite(result.balanced_accuracies),
            "balanced_accuracy": _mean_std(result.balanced_accuracies)[0],
            "macro_f1": _mean_std(result.macro_f1s)[0]} if result.balanced_accuracies else {}),
        "seconds": round(result.seconds, 3),
        "epochs": len(result.curve_train),
        "curve_train": _finite(result.curve_train),
        "curve_val": _finite(result.curve_val),
    }
    if result.diverged or result.interrupted:
        attrs["prune_reason"] = result.diverged or result.interrupted
    for key, value in attrs.items():
        trial.set_user_attr(key, value)


def write_fail_reason(trial: optuna.Trial, reason: str) -> None:
    trial.set_user_attr("fail_reason", reason)


# --- study-level attrs ---------------------------------------------------------------------
def name_objective(study: optuna.Study) -> None:
    """Name the objective "cv_loss" for Optuna's plots and for optuna-dashboard.

    optuna-dashboard >= 0.15 reads Optuna's metric names; its own `set_objective_names`
    is deprecated in favour of them.
    """
    study.set_metric_names([OBJECTIVE_NAME])


def write_study(study: optuna.Study, spec: Study, dataset: Dataset) -> None:
    from sweeps import __version__

    study.set_user_attr("sweeps_version", __version__)
    study.set_user_attr("settings", spec.settings)
    study.set_user_attr("fingerprint", dataset.fingerprint)
    study.set_user_attr("metric_name", metric_name(spec.task))
    if dataset.classes is not None:
        study.set_user_attr("classes", [c.item() if hasattr(c, "item") else c for c in dataset.classes])


def check_same_study(study: optuna.Study, spec: Study, dataset: Dataset, storage_url: str) -> None:
    """Refuse to continue a stored study whose data, test rows or settings differ from `spec`."""
    stored = study.user_attrs
    fix = (f"to keep both, give this study another name; to start over, delete study "
           f"'{spec.name}' from {storage_url}")
    fingerprint = stored.get("fingerprint")
    if fingerprint and fingerprint.get("data_sha256") != dataset.data_hash:
        raise SweepsError(
            f"study '{spec.name}' in {storage_url} was made with different data "
            f"({fingerprint.get('n_rows')} rows x {fingerprint.get('n_features')} features, "
            f"sha256 {str(fingerprint.get('data_sha256'))[:12]}; now {len(dataset.y)} x "
            f"{dataset.X.shape[1]}, sha256 {dataset.data_hash[:12]}); its trials would not be "
            f"comparable; {fix}."
        )
    if fingerprint and fingerprint.get("test_rows_sha256") != dataset.test_hash:
        raise SweepsError(
            f"study '{spec.name}' in {storage_url} held out different test rows (test_size or seed "
            f"changed); trials would have seen today's test rows; {fix}."
        )
    settings = stored.get("settings") or {}
    for key in ("task", "folds", "seed", "test_size"):
        if key in settings and settings[key] != spec.settings[key]:
            raise SweepsError(
                f"study '{spec.name}' in {storage_url} was run with {key}={settings[key]!r}, "
                f"the study file now says {key}={spec.settings[key]!r}; {fix}."
            )

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
    fold_curves                         per fold, its validation loss at every epoch it trained
    honest_cv_loss, cv_optimism         the CV loss with each fold's stopping epoch chosen on the
                                        other folds, and how much lower the CV loss is
    group_val_loss, group_metric        Study(groups=): per group, mean over the folds holding it
    worst_group, group_spread           the group of the largest loss, and largest - smallest
    fold_group_val_losses, group_curve_val   per fold; per group, per epoch
    prune_reason / fail_reason          why a trial did not complete
    worker                              host:pid of the process that ran it

Study user attrs: summary (the state in words, first on the dashboard's study page; `notes`),
sweeps_version, settings (task, folds, seed, ...), settings_history
(accepted changes of settings), fingerprint (the values', the columns' and the held-out
rows' hashes, the column names), metric_name, classes; stop_reason (the converged stop);
test_result, test_evaluations, test_history after `evaluate`; baselines, learning_curve,
diagnosis, diagnosis_report after `diagnose`.

Sweeps writes no user attr anywhere else (`tests/test_layout.py` holds it to that).

Each use of the held-out test set is also a trial of the companion study
"<name>:test-evaluations" in the same storage: the storage numbers trials atomically, so
evaluations started at the same moment are counted apart (`reserve_test_evaluation`).
"""

from __future__ import annotations

import datetime
import math
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import TrialState

from sweeps import __version__
from sweeps.errors import SweepsError, option
from sweeps.spec.study import Study
from sweeps.store import internals

# Only for annotations, and no cycle behind them (neither module imports sweeps.store): the
# launcher records without loading torch (engine.scores) or scikit-learn and pandas (data.dataset).
if TYPE_CHECKING:
    from sweeps.data.dataset import Dataset
    from sweeps.engine.scores import FoldResult

OBJECTIVE_NAME = "cv_loss"


def metric_name(task: str) -> str:
    return "accuracy" if task == "classification" else "rmse"


def _finite(values: list[float]) -> list[float | None]:
    # JSON has no NaN: a diverged fold's loss is stored as null.
    return [float(v) if math.isfinite(v) else None for v in values]


def _round(value: float) -> float | None:
    return float(f"{value:.5g}") if math.isfinite(value) else None


def _mean_std(values: list[float]) -> tuple[float | None, float | None]:
    array = np.asarray(values, dtype=float)
    if not np.isfinite(array).all():
        return None, None
    return float(array.mean()), float(array.std())


def group_attrs(result: FoldResult, names: tuple[str, ...]) -> dict[str, Any]:
    """Study(groups=): each group's validation loss and metric (mean over the folds holding it),
    the worst group and the spread between groups, and the per-fold and per-epoch numbers."""
    if not result.group_val_losses or not names:
        return {}
    losses = np.asarray(result.group_val_losses, dtype=float)  # [k, G]; NaN: a fold without the group
    metrics = np.asarray(result.group_metrics, dtype=float)
    held = [g for g in range(len(names)) if not np.isnan(losses[:, g]).all()]  # by some fold
    if not held:
        return {}
    mean_loss = dict(zip(held, np.nanmean(losses[:, held], 0)))
    mean_metric = dict(zip(held, np.nanmean(metrics[:, held], 0)))
    worst, best = max(held, key=mean_loss.get), min(held, key=mean_loss.get)
    curves = np.asarray(result.group_curve_val, dtype=float).reshape(-1, len(names))
    return {
        "group_val_loss": {names[g]: _round(mean_loss[g]) for g in held},
        "group_metric": {names[g]: _round(mean_metric[g]) for g in held},
        "worst_group": names[worst],
        "group_spread": _round(mean_loss[worst] - mean_loss[best]),
        "fold_group_val_losses": [{names[g]: _round(v) for g, v in enumerate(fold) if math.isfinite(v)}
                                  for fold in losses.tolist()],
        "group_curve_val": {names[g]: [_round(v) for v in curves[:, g]] for g in held},
    }


def write_trial(trial: optuna.Trial, result: FoldResult, task: str,
                group_names: tuple[str, ...] = (), held: EpochValues | None = None) -> dict[str, Any]:
    """Store a finished training run's evidence on its trial (before it is told), with the epoch
    values `held` back, in one write; returns it."""
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
        # Per-epoch curves at 5 significant digits: with k x epochs numbers in fold_curves, they
        # are most of a trial's size, in the database and in every dashboard page load.
        "curve_train": [_round(v) for v in result.curve_train],
        "curve_val": [_round(v) for v in result.curve_val],
        "fold_curves": [[_round(v) for v in curve] for curve in result.fold_curves],
    }
    attrs.update(group_attrs(result, group_names))
    honest = result.honest_cv_loss
    if honest is not None and result.val_losses:
        attrs["honest_cv_loss"] = honest
        attrs["cv_optimism"] = honest - result.cv_loss
    if result.diverged or result.interrupted:
        attrs["prune_reason"] = result.diverged or result.interrupted
    (held or EpochValues(trial)).write(attrs)
    return attrs


def write_fail_reason(trial: optuna.Trial, reason: str, held: EpochValues | None = None) -> None:
    (held or EpochValues(trial)).write({"fail_reason": reason})


WRITE_EVERY = 2.0  # seconds: the most a running trial's stored curve lags behind its training


class EpochValues:
    """A running trial's value after each epoch (what `Trial.report` stores), written in batches:
    every `WRITE_EVERY` seconds, and with the trial's record when it ends, in one transaction.

    Optuna writes each report in a transaction of its own (about 1.2 ms on SQLite): with the
    record's 25 attributes, 15 % of a sweep of a small table. Holding them back changes no
    decision: the trial's own pruner reads the trial's in-process copy, updated at once, and
    nothing else reads a running trial's values (Optuna's median and percentile pruners,
    sweeps' fold-paired pruner and TPE read finished trials; successive halving, the rungs it
    writes itself). The dashboard's live curves lag by at most `WRITE_EVERY`; a process that
    dies loses only the unwritten epochs of trials that are failed for it anyway.
    """

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial, self.pending, self.written_at = trial, {}, time.monotonic()

    def add(self, epoch: int, value: float) -> None:
        """Report `value` at `epoch` (raises `UpdateFinishedTrialError` when a write finds the
        trial finished elsewhere, as `Trial.report` does)."""
        value = float(value)
        if internals.note_intermediate(self.trial, epoch, value):
            self.pending[epoch] = value
        if time.monotonic() - self.written_at >= WRITE_EVERY:
            self.write()

    def write(self, user_attrs: dict[str, Any] | None = None) -> None:
        """Write the held-back epochs, and `user_attrs`, now."""
        internals.write_trial_values(self.trial, self.pending, user_attrs or {})
        self.pending, self.written_at = {}, time.monotonic()


def write_stale_reason(storage: optuna.storages.BaseStorage, trial_id: int, grace_period: int) -> None:
    """Why a trial whose worker went silent is failed (written by whichever process fails it)."""
    storage.set_trial_user_attr(trial_id, "fail_reason", (
        f"its worker sent no heartbeat for {grace_period} s (the process died, was killed, or its machine was "
        "lost); failed, and its configuration queued again"))


def write_worker(trial: optuna.Trial, worker: str) -> None:
    """Which machine and process runs the trial (host:pid)."""
    trial.set_user_attr("worker", worker)


def write_stop_reason(study: optuna.Study, reason: str) -> None:
    """Why the study stopped before its target (the converged stop), written once."""
    if study.user_attrs.get("stop_reason") != reason:
        study.set_user_attr("stop_reason", reason)


# --- study-level attrs ---------------------------------------------------------------------
def name_objective(study: optuna.Study) -> None:
    """Name the objective "cv_loss" for Optuna's plots and for optuna-dashboard.

    optuna-dashboard >= 0.15 reads Optuna's metric names; its own `set_objective_names`
    is deprecated in favour of them.
    """
    study.set_metric_names([OBJECTIVE_NAME])


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def write_study(study: optuna.Study, spec: Study, dataset: Dataset) -> None:
    if "summary" not in study.user_attrs:  # written first, so that the dashboard lists it first
        study.set_user_attr("summary", "Sweeping; not scored on the held-out rows yet, not diagnosed yet.")
    study.set_user_attr("sweeps_version", __version__)
    stored = study.user_attrs.get("settings")
    if stored:
        stored = {**LEGACY_SETTINGS, **stored}
    changed = {k: v for k, v in spec.settings.items() if stored and stored.get(k, v) != v}
    if changed:  # accepted with --accept-changed-settings: say from which trial on
        history = list(study.user_attrs.get("settings_history", []))
        history.append({"timestamp": _now(), "from_trial": len(study.trials),
                        "before": {k: stored.get(k) for k in changed}, "after": changed})
        study.set_user_attr("settings_history", history)
    study.set_user_attr("settings", spec.settings)
    study.set_user_attr("fingerprint", dataset.fingerprint)
    study.set_user_attr("metric_name", metric_name(spec.task))
    if dataset.classes is not None:
        study.set_user_attr("classes", [c.item() if hasattr(c, "item") else c for c in dataset.classes])


def check_sweeps_study(study: optuna.Study, where: str) -> None:
    """Refuse a study that sweeps did not write, before anything is written to it.

    A study of the same name made by plain Optuna (other parameters, `maximize`, several
    objectives) must not be adopted: sweeps would add its attrs and trials to it.
    """
    attrs = study.user_attrs
    if "sweeps_version" not in attrs or "settings" not in attrs:
        # A single-objective study with no attrs and nothing run yet is adoptable: sweeps' own
        # creation interrupted before its attrs were written, or a study made with
        # optuna.create_study to enqueue first configurations (enqueue_trial) for sweeps to run.
        unrun = all(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))
        if not attrs and unrun and study.directions == [optuna.study.StudyDirection.MINIMIZE]:
            return
        raise SweepsError(
            f"study '{study.study_name}' in {where} was not written by sweeps (it has no sweeps settings), "
            "so sweeps leaves it alone; give your study another name (Study(name=...)) or pass another --storage.")
    if study.directions != [optuna.study.StudyDirection.MINIMIZE]:
        raise SweepsError(f"study '{study.study_name}' in {where} has directions "
                          f"{[d.name.lower() for d in study.directions]}, not one 'minimize' objective; "
                          "give this study another name or pass another --storage.")


# Settings that change what a trial's value means, or what every net is trained on: trials
# before and after a change are not comparable, so a change is refused unless the user
# accepts it (then it is recorded). A study made by sweeps 0.1 stored no `validation` or
# `preprocessing`: it had these.
VALUE_SETTINGS = ("max_epochs", "patience", "validation", "preprocessing")
LEGACY_SETTINGS = {"validation": "plain", "preprocessing": "standard"}


def stored_settings(study: optuna.Study) -> dict[str, Any]:
    """The study's settings, with what sweeps 0.1 did for the ones it did not store."""
    return {**LEGACY_SETTINGS, **(study.user_attrs.get("settings") or {})}


def check_same_study(study: optuna.Study, spec: Study, dataset: Dataset, storage_url: str,
                     accept_changed_settings: bool | None = None) -> Dataset:
    """Refuse to continue a stored study whose data, columns, test rows or settings differ from
    `spec`; return the dataset to use: `dataset`, or the same data with its columns put back in
    the study's order when only their order changed (same names, same values under each name).

    `accept_changed_settings`: None only reads (evaluate, diagnose: the value settings do
    not matter there); False refuses a change of `VALUE_SETTINGS`; True lets it through
    (`write_study` then records it in `settings_history`).
    """
    stored = study.user_attrs
    fix = (f"to keep both, give this study another name; to start over, delete study "
           f"'{spec.name}' from {storage_url}")
    fingerprint = stored.get("fingerprint")
    dataset = _same_columns(spec, dataset, fingerprint or {}, storage_url, fix)
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
    if accept_changed_settings is False and settings:
        settings = {**LEGACY_SETTINGS, **settings}
        changed = [k for k in VALUE_SETTINGS if settings.get(k, spec.settings[k]) != spec.settings[k]]
        if changed:
            was = ", ".join(f"{k}={settings[k]!r}" for k in changed)
            now = ", ".join(f"{k}={spec.settings[k]!r}" for k in changed)
            raise SweepsError(
                f"study '{spec.name}' in {storage_url} was run with {was}, the study file now says {now}: "
                f"new trials' values would not be comparable with the stored ones; {fix}; or rerun with "
                f"{option('accept_changed_settings', True)} to go on and "
                "record the change.")
    return dataset


def _same_columns(spec: Study, dataset: Dataset, fingerprint: dict, storage_url: str, fix: str) -> Dataset:
    """The columns' names, order and kinds must be the study's. Only reordered (the same names,
    the same values under each name): the data in the study's order. A study made before
    columns were recorded (sweeps 0.2.0) is checked on its values alone."""
    stored_hash, stored = fingerprint.get("columns_sha256"), fingerprint.get("columns")
    if stored_hash is None or stored_hash == dataset.columns_hash:
        return dataset
    now = None if dataset.columns is None else list(dataset.columns)
    if stored is not None and now is not None and sorted(stored) == sorted(now) and stored != now:
        aligned = dataset.in_column_order(stored)
        if aligned.columns_hash == stored_hash and aligned.data_hash == fingerprint.get("data_sha256"):
            return aligned  # the same table with its columns in another order: read in the study's
        if aligned.columns_hash == stored_hash:
            moved = [c for c, d in zip(stored, now) if c != d]
            raise SweepsError(
                f"study '{spec.name}' in {storage_url} was made with columns {stored}; the data now names them "
                f"in another order ({now}), and under those names the values differ (were the names of "
                f"{', '.join(repr(c) for c in moved[:4])} swapped?); the model would read crossed columns; fix "
                f"the data's header, or {fix}.")
    if stored is None or now is None:
        raise SweepsError(f"study '{spec.name}' in {storage_url} was made with "
                          f"{'an array' if stored is None else 'columns ' + str(stored)}, the data now has "
                          f"{'an array' if now is None else 'columns ' + str(now)}; {fix}.")
    added, removed = [c for c in now if c not in stored], [c for c in stored if c not in now]
    change = (f"added {added}" if added else "") + ("; " if added and removed else "") + (
        f"removed {removed}" if removed else "") or "a column's type changed (numeric against categorical)"
    raise SweepsError(f"study '{spec.name}' in {storage_url} was made with other columns ({change}); its trials "
                      f"would not be comparable, and a model would read the wrong columns; {fix}.")


def write_baselines(study: optuna.Study, baselines: dict[str, dict[str, float]], scale: str = "plain") -> None:
    """The simple models fitted on the study's folds, kept so that later diagnoses reuse them,
    and the scale of their losses ("plain" or "class-balanced", as the study's trials)."""
    study.set_user_attr("baselines", baselines)
    study.set_user_attr("baselines_scale", scale)


def write_diagnosis(study: optuna.Study, learning_curve: list[dict[str, float]], verdicts: dict[str, Any],
                    report: str) -> None:
    """A diagnosis: its learning curve, its verdicts (stamped with the time) and its report."""
    study.set_user_attr("learning_curve", learning_curve)
    study.set_user_attr("diagnosis", {"timestamp": _now(), **verdicts})
    study.set_user_attr("diagnosis_report", report)


def write_follow(study: optuna.Study, round_: dict[str, Any]) -> None:
    """A round of --follow: its number, parent, the verdict acted on, the change, and the
    comparison with its parent (the study note shows it)."""
    study.set_user_attr("follow", round_)


def write_follow_report(study: optuna.Study, report: str) -> None:
    """The path of --follow, on its first study (the study note shows it)."""
    study.set_user_attr("follow_report", report)


def write_summary(study: optuna.Study, summary: str) -> None:
    """The study's state in a few words, where optuna-dashboard opens the study (its user
    attributes, beside the history plot): the test result and the diagnosis's verdict."""
    if study.user_attrs.get("summary") != summary:
        study.set_user_attr("summary", summary)


# --- the held-out test set's uses --------------------------------------------------------------
def reserve_test_evaluation(study: optuna.Study) -> tuple[int, optuna.Study, optuna.Trial]:
    """Count one more use of the held-out test set, atomically; returns its number (1 = first).

    Two evaluations started together get different numbers: the companion study's trial
    numbers are assigned by the storage in one transaction. Counts recorded before the
    companion study existed (sweeps 0.1) are continued.
    """
    # The count is read before the ledger's trial is asked: read after, it could include an
    # evaluation that asked later and finished first, and both would count that one.
    earlier = int(study.user_attrs.get("test_evaluations", 0))
    ledger = optuna.create_study(storage=internals.storage_of(study), study_name=f"{study.study_name}:test-evaluations",
                                 load_if_exists=True, sampler=optuna.samplers.RandomSampler(seed=0))
    trial = ledger.ask()
    return max(trial.number + 1, earlier + 1), ledger, trial


def write_test_evaluation(study: optuna.Study, ledger: optuna.Study, trial: optuna.Trial,
                          entry: dict[str, Any]) -> None:
    """Record a test evaluation: on its ledger trial, and as the study's latest result."""
    summary = {k: entry[k] for k in ("evaluation", "timestamp", "source", "loss", "metric")}
    for key, value in summary.items():
        trial.set_user_attr(key, value)
    ledger.tell(trial, entry["loss"])
    # Rebuilt from the ledger, so evaluations that ran at the same moment are all listed.
    history = {e["evaluation"]: e for e in study.user_attrs.get("test_history", [])}
    for t in ledger.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
        if "evaluation" in t.user_attrs:
            history[t.user_attrs["evaluation"]] = {k: t.user_attrs[k] for k in summary}
    study.set_user_attr("test_result", entry)
    study.set_user_attr("test_history", [history[k] for k in sorted(history)])
    study.set_user_attr("test_evaluations", max(history))

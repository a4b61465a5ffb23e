"""Retrain the chosen configuration, score the held-out test set once, record it.

The configuration is the study's best trial, or the one in an exported file. It is
retrained on every non-test row (preprocessing fitted on those rows only) for a fixed number
of epochs: the median over folds of the chosen trial's best epoch. No rows are set aside for
early stopping, so the final model sees all the data the sweep saw; with k folds it sees
k/(k-1) times the rows per epoch that each fold did.

The held-out test set, carved off before the first trial, is then scored once. The result
is printed beside the CV estimate, recorded on the study (user attrs `test_result`,
`test_evaluations`, `test_history`), and the model is saved for `sweeps.load_model`.
"""

from __future__ import annotations

import datetime
import warnings
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from sklearn.metrics import (balanced_accuracy_score, classification_report, confusion_matrix, roc_auc_score,
                             mean_absolute_error, r2_score)

from sweeps.store import notes, record
from sweeps.sweep import stop
from sweeps.data.dataset import Dataset
from sweeps.errors import STDERR, SweepsError
from sweeps.results.export import read_config
from sweeps.results.final import ensemble_final, resolve, train_final
from sweeps.sweep.trial import transfer, trial_seed
from sweeps.store.storage import load_existing_study
from sweeps.store.storage import attach, check_writable, describe, output_path
from sweeps.spec.study import Study
from sweeps.engine.config import NetConfig
from sweeps.engine.trained import TrainedModel, UnseenCategoryWarning


def choose(study: optuna.Study, spec: Study, config_path: str | None) -> dict[str, Any]:
    """The configuration to evaluate: params, epochs, seed, and where it came from."""
    if config_path:
        document = read_config(config_path)
        if "study" in document and document["study"] != spec.name:
            raise SweepsError(f"{config_path}: was exported from study '{document['study']}', not "
                              f"'{spec.name}'; export this study's config, or remove the 'study' and "
                              "'fingerprint' keys to use only its params.")
        stored, given = study.user_attrs.get("fingerprint") or {}, document.get("fingerprint")
        if given is not None and given != stored:
            raise SweepsError(f"{config_path}: its data or test fingerprint does not match study "
                              f"'{spec.name}' (the data or held-out rows changed since it was exported); "
                              "export the config again.")
        if document["median_best_epoch"] > spec.max_epochs:
            raise SweepsError(f"{config_path}: median_best_epoch={document['median_best_epoch']} exceeds the study's "
                              f"max_epochs={spec.max_epochs}; a trial never trains that long; fix the file.")
        first = (document.get("trials") or [{}])[0]
        number = first.get("trial") if isinstance(first, dict) else None
        return {"params": document["params"], "epochs": document["median_best_epoch"], "trial": number,
                "cv_loss": first.get("cv_loss"), "cv_loss_std": first.get("cv_loss_std"),
                "honest_cv_loss": first.get("honest_cv_loss"),
                "metric": first.get("metric"), "metric_std": first.get("metric_std"),
                "source": f"trial #{number} (from {config_path})" if number is not None else str(config_path)}
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise SweepsError(f"study '{spec.name}' has no completed trial yet; run the sweep first "
                          f"(python -m sweeps.run).")
    best = study.best_trial
    a = best.user_attrs
    return {"params": dict(best.params), "epochs": max(1, int(np.median(a.get("best_epochs") or [1]))),
            "trial": best.number, "cv_loss": best.value, "cv_loss_std": a.get("cv_loss_std"),
            "honest_cv_loss": a.get("honest_cv_loss"),
            "metric": a.get("metric"), "metric_std": a.get("metric_std"), "source": f"trial #{best.number}"}


def score(model: TrainedModel, dataset: Dataset) -> dict[str, Any]:
    """Loss and metrics of `model` on the held-out test rows (the only place they are used)."""
    X, y = dataset.rows(dataset.test), dataset.y[dataset.test]
    with warnings.catch_warnings():  # counted, and stated in the report, instead
        warnings.simplefilter("ignore", UnseenCategoryWarning)
        outputs = model.log_proba(X).cpu() if model.task == "classification" else model.predict(X)
    unseen = {"unseen_categories": model.unseen_categories} if model.unseen_categories else {}
    if model.task == "classification":
        log_p = outputs
        loss = float(-log_p[torch.arange(len(y)), torch.as_tensor(y)].mean())
        pred = log_p.argmax(-1).numpy()
        labels = list(range(len(dataset.classes)))
        names = [str(c) for c in model.classes]
        report = classification_report(y, pred, labels=labels, target_names=names, output_dict=True,
                                       zero_division=0)
        auc = {}
        if len(dataset.classes) == 2 and len(np.unique(y)) == 2:
            auc = {"roc_auc": float(roc_auc_score(y, log_p[:, 1].exp().numpy()))}
        return {
            "loss": loss, "metric_name": "accuracy", "metric": float((pred == y).mean()), **auc,
            "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
            "macro_f1": float(report["macro avg"]["f1-score"]),
            "confusion_matrix": confusion_matrix(y, pred, labels=labels).tolist(),
            "classes": names,
            "per_class": {n: {k: round(float(v), 4) for k, v in report[n].items()} for n in names}, **unseen,
        }
    pred = outputs
    p = model.preprocessing
    return {
        "loss": float(np.mean(((pred - y) / p.y_std) ** 2)),  # the CV loss's units: standardized MSE
        "metric_name": "rmse", "metric": float(np.sqrt(np.mean((pred - y) ** 2))),
        "mae": float(mean_absolute_error(y, pred)), "r2": float(r2_score(y, pred)), **unseen,
    }


def evaluate_study(spec: Study, dataset: Dataset, *, storage: str | None = None,
                   config_path: str | None = None, model_path: str | None = None,
                   device: str = "cpu", err: TextIO = STDERR) -> tuple[dict[str, Any], TrainedModel]:
    """Retrain the chosen configuration on all non-test rows, score the test set once, record it.

    Returns the recorded test result (`report` prints it) and the trained model (also saved
    to its file). `err` takes the warnings: a test set used before, a copy not written.
    """
    study, url = load_existing_study(spec.name, storage)
    dataset = record.check_same_study(study, spec, dataset, describe(url))
    if spec.final_model == "ensemble" and config_path:
        raise SweepsError(f"{config_path}: --config names one configuration, and final_model=\"ensemble\" "
                          "chooses among the study's trials; drop --config, or use another final_model.")
    chosen = choose(study, spec, config_path)
    path = Path(model_path) if model_path else output_path(url, spec.name, "-model.pt")
    check_writable(path, "model")  # before training, not after the test set was scored
    strategy, why, kept = resolve(spec.final_model, spec.task, study, url, dataset, config_path)

    settings = record.stored_settings(study)  # what the trials were trained with
    if strategy == "ensemble":
        model, selection = ensemble_final(study, url, dataset, settings, spec.task, device, kept)
        chosen.update(ensemble_chosen(study, selection))
        train_loss = None
    else:
        # Retrained as its trial was, scored the same way (the folds strategy checks the CV loss).
        config = NetConfig.from_params(chosen["params"], settings.get("validation", "plain"))
        seed = trial_seed(spec.seed, chosen["trial"] if chosen["trial"] is not None else 0)
        model, result = train_final(strategy, dataset, config, settings=settings, seed=seed,
                                    epochs=chosen["epochs"], task=spec.task, params=chosen["params"], device=device,
                                    init=lambda folds: transfer(spec, folds.n_features, folds.n_outputs,
                                                                dataset.columns)[1],
                                    expected_cv_loss=chosen["cv_loss"] if chosen["trial"] is not None else None,
                                    source=chosen["source"])
        train_loss = float(sum(result.train_losses) / len(result.train_losses))

    # The model is written before the test set is looked at: a disk that cannot take it stops
    # the evaluation here, with nothing recorded and the test set unused.
    model.info.update(study=spec.name, fingerprint=dataset.fingerprint)
    _save(model, path)
    # The test set's use is counted in the storage, atomically, before it is looked at; the score
    # is recorded with it and printed, whatever happens after (a stop waits until both are done).
    with stop.deferred():
        evaluation, ledger, ledger_trial = record.reserve_test_evaluation(study)
        if evaluation > 1:
            last = (study.user_attrs.get("test_result") or {}).get("timestamp", "?")
            print(f"warning: the held-out test set of '{spec.name}' has already been used {evaluation - 1} time(s) "
                  f"(last recorded {last}). It is for one final look, not for selection: choosing a "
                  "configuration by its test score makes that score optimistic.", file=err)
        test = score(model, dataset)
        entry = {
            "evaluation": evaluation,
            "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "source": chosen["source"], "trial": chosen["trial"], "params": chosen["params"],
            "epochs": chosen["epochs"], "train_rows": int(len(dataset.dev)), "test_rows": int(len(dataset.test)),
            "cv_loss": chosen["cv_loss"], "cv_loss_std": chosen["cv_loss_std"],
            "honest_cv_loss": chosen["honest_cv_loss"],
            "cv_metric": chosen["metric"], "cv_metric_std": chosen["metric_std"],
            "train_loss": train_loss, **({"ensemble": chosen["ensemble"]} if "ensemble" in chosen else {}),
            "final_model": strategy, **({"final_model_reason": why} if why else {}),
            "members": model.n_members, "model_path": str(path), **test,
        }
        record.write_test_evaluation(study, ledger, ledger_trial, entry)
    # What follows only adds to what is recorded: a failure is one line, and loses nothing.
    model.info["test_result"] = entry
    try:
        model.save(path)  # the model with its test result; the one saved above stays if this fails
        attach(study, path, url)
        notes.refresh(study)
    except (OSError, SweepsError) as e:
        print(f"sweeps: warning: the model with its test result could not be written or attached "
              f"({e.strerror if isinstance(e, OSError) else e}); the result is recorded on the study "
              f"(evaluation #{evaluation}), and {path} holds the model as saved before scoring.", file=err)
    return entry, model


def ensemble_chosen(study: optuna.Study, selection) -> dict[str, Any]:
    """What the evaluation records of an ensemble: its trials and weights, its out-of-fold loss
    (optimistic: the selection saw those rows) and the honest estimate beside it."""
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    parts = ", ".join(f"#{t} ({w:.0%})" for t, w in zip(selection.trials, selection.weights))
    return {"source": f"an ensemble of trials {parts}", "trial": selection.trials[0],
            "params": dict(trials[selection.trials[0]].params), "cv_loss": selection.oof_loss, "cv_loss_std": None,
            "honest_cv_loss": selection.honest_loss, "metric": None, "metric_std": None,
            "ensemble": {"trials": selection.trials, "weights": selection.weights,
                         "params": [dict(trials[t].params) for t in selection.trials],
                         "oof_loss": selection.oof_loss, "honest_loss": selection.honest_loss,
                         "best_single_loss": selection.best_single_loss}}


def _save(model: TrainedModel, path: Path) -> None:
    try:
        model.save(path)
    except OSError as e:
        raise SweepsError(f"{path}: the model cannot be written ({e.strerror}); free space or pass another "
                          "--output; the held-out test set was not used.") from None


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def report(spec: Study, e: dict[str, Any]) -> str:
    """The test figures beside the CV estimate, as printed by the command."""
    lines = [
        f"Held-out test set of '{spec.name}': {e['test_rows']} rows the sweep never saw.",
        notes.final_model_line(e),
        "",
        f"  {'':10s} {'test':>10s}   CV (mean ± std over {spec.folds} folds"
        + (", of the ensemble's out-of-fold predictions)" if e.get("final_model") == "ensemble" else ")"),
        f"  {'loss':10s} {e['loss']:10.4f}   {_pm(e['cv_loss'], e['cv_loss_std'])}"
        + (f"   (honest: {e['honest_cv_loss']:.4f})" if e.get("honest_cv_loss") is not None else ""),
        f"  {e['metric_name']:10s} {e['metric']:10.4f}   {_pm(e['cv_metric'], e['cv_metric_std'])}",
    ]
    if e["metric_name"] == "accuracy":
        if "roc_auc" in e:
            lines.append(f"  {'ROC-AUC':10s} {e['roc_auc']:10.4f}")
        lines.append(f"  {'bal. acc.':10s} {e['balanced_accuracy']:10.4f}")
        lines.append(f"  {'macro F1':10s} {e['macro_f1']:10.4f}")
        lines += ["", "Confusion matrix (rows: true class, columns: predicted):"]
        width = max(len(c) for c in e["classes"]) + 1
        cell = max(4, len(str(max(max(r) for r in e["confusion_matrix"]))) + 1)
        lines.append(" " * (width + 2) + "".join(f"{c:>{cell}}" for c in e["classes"]))
        for name, row in zip(e["classes"], e["confusion_matrix"]):
            lines.append(f"  {name:>{width}}" + "".join(f"{v:>{cell}}" for v in row))
        lines += ["", f"  {'class':>{width}} precision  recall      f1  support"]
        for name, s in e["per_class"].items():
            lines.append(f"  {name:>{width}} {s['precision']:9.3f} {s['recall']:7.3f} {s['f1-score']:7.3f} "
                         f"{int(s['support']):8d}")
    else:
        lines.append(f"  {'mae':10s} {e['mae']:10.4f}")
        lines.append(f"  {'r2':10s} {e['r2']:10.4f}")
    if e.get("unseen_categories"):
        lines += ["", f"{e['unseen_categories']} categorical value(s) of the test rows were never seen in training: "
                      "each was encoded as no category of its column."]
    lines += ["", f"Saved model: {e['model_path']}  (sweeps.load_model(path).predict(X))",
              f"Recorded on study '{spec.name}' as test evaluation #{e['evaluation']}."]
    return "\n".join(lines)

"""The chosen configuration as a file, and the saved model as ONNX.

The file holds the best trial's hyperparameters, its CV loss with the per-fold spread and
metric, the median best epoch, the study's name, settings, data and test fingerprints, and
the versions of sweeps, optuna and torch: enough for `python -m sweeps.evaluate --config`
or another person to use it. `top=K` lists the K best complete trials instead (the first
is the one `evaluate --config` uses). `held_out_rows` gives the held-out rows' positions, so
that another tool can be scored on exactly the rows `evaluate` scores.
"""

from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from sweeps import __version__
from sweeps.data.dataset import Dataset
from sweeps.engine.trained import EnsembleModel, TrainedModel, load_model
from sweeps.results.onnx import export_onnx
from sweeps.errors import SweepsError, option
from sweeps.store.storage import attach, check_writable, describe, output_path, write_text_atomic
from sweeps.spec.options import EXPORT_RULES
from sweeps.spec.space import check_config

FORMAT = "sweeps-config-1"


def trial_entry(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One trial's configuration and the evidence for it."""
    a = trial.user_attrs
    best_epochs = a.get("best_epochs") or [1]
    return {
        "trial": trial.number,
        "params": dict(trial.params),
        "cv_loss": trial.value,
        "cv_loss_std": a.get("cv_loss_std"),
        "fold_val_losses": a.get("fold_val_losses"),
        "train_loss": a.get("train_loss"),
        "metric_name": a.get("metric_name"),
        "metric": a.get("metric"),
        "metric_std": a.get("metric_std"),
        "fold_metrics": a.get("fold_metrics"),
        "best_epochs": best_epochs,
        "median_best_epoch": max(1, int(np.median(best_epochs))),
        "n_params": a.get("n_params"),
        "honest_cv_loss": a.get("honest_cv_loss"),
        "cv_optimism": a.get("cv_optimism"),
    }


RULES = EXPORT_RULES


def one_standard_error(complete: list[optuna.trial.FrozenTrial]) -> tuple[optuna.trial.FrozenTrial, str]:
    """The simplest trial whose CV loss is within one standard error of the best's.

    The standard error is the best trial's spread over its k folds, std / sqrt(k). Among the
    trials within it, the simplest has the fewest parameters; ties go to the strongest
    regularisation (weight decay, then dropout). Returns it and a sentence saying why.
    """
    best = min(complete, key=lambda t: t.value)
    folds = len(best.user_attrs.get("fold_val_losses") or []) or 1
    se = (best.user_attrs.get("cv_loss_std") or 0.0) / np.sqrt(folds)
    within = [t for t in complete if t.value <= best.value + se]
    simplest = min(within, key=lambda t: (t.user_attrs.get("n_params") or 0, -t.params.get("weight_decay", 0.0),
                                          -t.params.get("dropout", 0.0), t.value))
    why = (f"one-standard-error rule: {len(within)} of {len(complete)} complete trials have a CV loss within one "
           f"standard error of the best (trial #{best.number}: {best.value:.4f} + {se:.4f}); trial "
           f"#{simplest.number} is the simplest of them ({simplest.user_attrs.get('n_params')} parameters against "
           f"{best.user_attrs.get('n_params')})")
    return simplest, why


def export_config(study: optuna.Study, url: str, top: int = 1, rule: str = "best") -> dict[str, Any]:
    """The export document of `study`: the chosen trial (by `rule`) and the `top` best complete trials.

    `rule` "best": the lowest CV loss; "one-se": the simplest configuration within one
    standard error of it (`one_standard_error`). `params` and `trials[0]` are the chosen one.
    """
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        raise SweepsError(f"study '{study.study_name}' has no completed trial yet; run the sweep first.")
    if rule not in RULES:
        raise SweepsError(f"{option('rule')} must be 'best' or 'one-se', got {rule!r}.")
    ranked = sorted(complete, key=lambda t: t.value)
    chosen, why = (ranked[0], "best: the lowest CV loss") if rule == "best" else one_standard_error(complete)
    ranked = [chosen] + [t for t in ranked if t.number != chosen.number][: top - 1]
    best = trial_entry(ranked[0])
    settings = study.user_attrs.get("settings", {})
    return {
        "format": FORMAT,
        "study": study.study_name,
        "storage": describe(url),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "task": settings.get("task"),
        "seed": settings.get("seed"),
        "settings": settings,
        "fingerprint": study.user_attrs.get("fingerprint"),
        "versions": {"sweeps": __version__, "optuna": optuna.__version__, "torch": str(torch.__version__)},
        "rule": rule,
        "chosen_because": why,
        "sampler": type(study.sampler).__name__,
        "pruner": type(study.pruner).__name__,
        "params": dict(best["params"]),  # a copy: YAML would write an alias for a shared dict
        "median_best_epoch": best["median_best_epoch"],
        "trials": [best] + [trial_entry(t) for t in ranked[1:]],
    }


def write_config(document: dict[str, Any], path: Path, fmt: str) -> Path:
    check_writable(path, "exported configuration")
    if fmt == "yaml":
        import yaml

        text = yaml.safe_dump(document, sort_keys=False)
    else:
        text = json.dumps(document, indent=2) + "\n"
    return write_text_atomic(path, text)


def read_config(path: str | Path) -> dict[str, Any]:
    """An exported configuration file (JSON or YAML), checked for shape."""
    path = Path(path)
    if not path.is_file():
        raise SweepsError(f"{Path(path).absolute()}: no such config file; python -m sweeps.export STUDY_FILE "
                          "writes one.")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            document = yaml.safe_load(text)
        else:
            document = json.loads(text)
    except Exception as e:
        raise SweepsError(f"{path}: cannot be parsed ({type(e).__name__}: {e}).") from None
    if not isinstance(document, dict) or "params" not in document:
        raise SweepsError(f"{path}: not a sweeps config file (no 'params'); export one with "
                          "python -m sweeps.export STUDY_FILE.")
    document["params"] = check_config(document["params"], where=f"{path}: params")
    epochs = document.get("median_best_epoch")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise SweepsError(f"{path}: median_best_epoch must be a positive integer, got {epochs!r}.")
    return document


def default_path(study_name: str, url: str, fmt: str) -> Path:
    """Next to the SQLite database, or under storage/ for a server URL."""
    return output_path(url, study_name, f"-best.{fmt}")


def export_study(study: optuna.Study, url: str, *, top: int = 1, rule: str = "best", output: str | Path | None = None,
                 fmt: str | None = None) -> tuple[dict[str, Any], Path]:
    """Write the export document of `study` (format from `fmt`, else `output`'s suffix, else
    JSON) and attach it to the study; returns the document and where it went."""
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise SweepsError(f"{option('top')} must be >= 1, got {top!r}.")
    fmt = fmt or ("yaml" if output and Path(output).suffix in (".yaml", ".yml") else "json")
    document = export_config(study, url, top, rule)
    path = write_config(document, Path(output) if output else default_path(study.study_name, url, fmt), fmt)
    attach(study, path, url)
    return document, path


def export_onnx_model(dataset: Dataset, study: optuna.Study, url: str, model_file: str | Path | None = None,
                      output: str | Path | None = None) -> tuple[Path, Path, TrainedModel | EnsembleModel]:
    """The model `evaluate` saved, as an ONNX graph checked with onnxruntime (`results.onnx`);
    returns (the model file read, the graph written, the model)."""
    source = Path(model_file) if model_file else output_path(url, study.study_name, "-model.pt")
    if not source.is_file():
        raise SweepsError(f"{source}: no saved model; python -m sweeps.evaluate STUDY_FILE saves one "
                          "(or pass --model-file).")
    model = load_model(source)
    path = Path(output) if output else output_path(url, study.study_name, ".onnx")
    check_writable(path, "ONNX model")
    sample = dataset.rows(dataset.dev[:256])  # non-test rows, for the parity check only
    preprocessings = [p for part in getattr(model, "parts", [model]) for p in part.preprocessings]
    if hasattr(sample, "columns") and not any(p.categorical_columns for p in preprocessings):
        sample = sample[model.preprocessing.numeric_columns].to_numpy(dtype=np.float64, na_value=np.nan)
    export_onnx(model, path, sample)
    attach(study, path, url)
    return source, path, model


def held_out_rows(dataset: Dataset, has_test_data: bool) -> tuple[np.ndarray, str]:
    """The held-out rows' positions and what they index: the rows the study's `data` returns
    ("data_row"), or with `Study(test_data=)`, the rows of `test_data` (all of them,
    "test_data_row"). Reading them scores nothing and does not count as a use of the test set."""
    if has_test_data:
        return dataset.test - dataset.test[0], "test_data_row"
    return dataset.test.copy(), "data_row"


def write_held_out_rows(dataset: Dataset, has_test_data: bool, path: Path) -> tuple[np.ndarray, str]:
    """`held_out_rows` as a one-column CSV (a header naming what the positions index), atomically."""
    rows, kind = held_out_rows(dataset, has_test_data)
    check_writable(path, "held-out rows")
    write_text_atomic(path, kind + "\n" + "".join(f"{r}\n" for r in rows.tolist()))
    return rows, kind

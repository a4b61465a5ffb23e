"""The final model: what `evaluate` scores once on the held-out rows and saves.

A sweep trains k good models of the chosen configuration, one per fold; the choice is what
to do with them, declared in the study (`Study(final_model=...)`) before the test set is
looked at, so the test set still gives one answer:

- "folds": the k fold-models of the chosen trial, retrained from the trial's own seed (the
  engine is deterministic: they are the trial's models, bit for bit, and the trial's CV loss
  is checked), each with the preprocessing fitted on its own fold; predictions average
  them (AutoGluon's "bagging"). Costs one more k-fold training run.
- "refit": one net retrained on every non-test row for the median best epoch of the folds.
- "refit-seeds": `REFIT_SEEDS` such refits with different seeds, trained together in one
  stack, averaged.
- "ensemble": a weighted set of the study's best trials, selected on their out-of-fold
  predictions (`results/ensemble.py`), each contributing the fold-models the sweep trained
  (`store/candidates.py`): nothing is trained again (`ensemble_final`).
- "auto" (the default): "ensemble" for a regression when at least two trials were kept as
  candidates here, else "folds" (`resolve`). Measured (docs: benchmarks): the ensemble was
  better than the folds on every seed of the three regression tables, and level with them on
  the classification tables, where it costs a larger model for nothing.

Averaged predictions are class probabilities (classification) or outputs in the target's
units (regression); `trained.TrainedModel` does the averaging, for `evaluate` and
`load_model` alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from sweeps.data.dataset import Dataset
from sweeps.errors import SweepsError
from sweeps.spec.options import FINAL_MODELS
from sweeps.data.cache import cached_folds
from sweeps.data.folds import Folds, make_final_fit
from sweeps.engine.model import StackedMLP
from sweeps.engine.config import NetConfig
from sweeps.engine.memory import available_memory, memory_needed
from sweeps.engine.scores import FoldResult
from sweeps.engine.train import train_folds
from sweeps.engine.trained import EnsembleModel, TrainedModel
from sweeps.engine.weights import class_weights
from sweeps.results.ensemble import Selection, ensemble_selection
from sweeps.store import candidates

REFIT_SEEDS = 5


def train_final(strategy: str, dataset: Dataset, config: NetConfig, *, settings: dict[str, Any],
                seed: int, epochs: int, task: str, params: dict[str, Any], device: str = "cpu",
                init: Callable[[Folds], StackedMLP | None] | None = None, expected_cv_loss: float | None = None,
                source: str = "the configuration") -> tuple[TrainedModel, FoldResult]:
    """Train the final model of `strategy` for the chosen configuration.

    `settings` are the study's stored settings (folds, seed, max_epochs, patience,
    preprocessing): the fold-models are rebuilt exactly as the trial built them. `init`
    gives the weights to start from for the folds made (transfer learning), or None.
    """
    if strategy in ("ensemble", "auto"):
        raise ValueError("train_final: an ensemble is selected, not trained (ensemble_final); resolve \"auto\" first")
    if strategy not in FINAL_MODELS:
        raise SweepsError(f"final_model must be one of {', '.join(repr(s) for s in FINAL_MODELS)}, got {strategy!r}.")
    scaling = settings["preprocessing"]
    if strategy == "folds":
        folds = cached_folds(dataset, settings["folds"], settings["seed"], device, scaling=scaling)
        _check_memory(folds, config, source)
        result = train_folds(folds, config, max_epochs=settings["max_epochs"], patience=settings["patience"],
                             seed=seed, init=init(folds) if init else None)
        if expected_cv_loss is not None and not math.isclose(result.cv_loss, expected_cv_loss, rel_tol=1e-3):
            raise SweepsError(f"{source}: retrained, its fold-models reach CV loss {result.cv_loss:.6g}, not the "
                              f"{expected_cv_loss:.6g} the trial recorded (another torch build or device?); use "
                              "final_model=\"refit\" here.")
        preprocessings, members = folds.preprocessings, list(range(folds.k))
    else:
        copies = REFIT_SEEDS if strategy == "refit-seeds" else 1
        folds, preprocessing = make_final_fit(dataset, device, scaling, copies=copies)
        _check_memory(folds, config, source)
        result = train_folds(folds, config, max_epochs=epochs, patience=None, seed=seed,
                             init=init(folds) if init else None, horizon=settings["max_epochs"])
        preprocessings, members = [preprocessing], [0] * copies
    if result.diverged:
        raise SweepsError(f"the final fit of {source} {result.diverged}; nothing was recorded.")
    classes = [c.item() if hasattr(c, "item") else c for c in dataset.classes] if dataset.classes is not None else None
    model = TrainedModel(task, dict(params), preprocessings, result.model, members, classes,
                         columns=None if dataset.columns is None else list(dataset.columns),
                         kinds=list(dataset.kinds) or None)
    model.info["final_model"] = strategy
    return model, result


def _check_memory(folds, config: NetConfig, source: str) -> None:
    needed, available = memory_needed(folds, config), available_memory(torch.device(folds.X_train.device))
    if available is not None and needed > 0.8 * available:
        raise SweepsError(f"{source}: depth {config.depth}, width {config.width} needs about "
                          f"{needed / 2**30:.1f} GiB, {available / 2**30:.1f} GiB is free; choose a smaller "
                          "configuration.")


def resolve(strategy: str, task: str, study, url: str, dataset: Dataset, config_path: str | None = None
            ) -> tuple[str, str | None, tuple | None]:
    """The strategy `evaluate` uses for the declared one, for "auto" the reason in words, and the
    candidates "auto" read (`candidates.read`'s answer, for `ensemble_final`; None otherwise)."""
    if strategy != "auto":
        return strategy, None, None
    if task == "classification":
        return "folds", "final_model=\"auto\": a classification keeps the chosen trial's fold-models", None
    if config_path:
        return "folds", "final_model=\"auto\": --config names one configuration", None
    folder = candidates.folder_for(url, study.study_name)
    try:
        kept = candidates.read(folder, study, dataset)
    except SweepsError as e:
        return "folds", f"final_model=\"auto\": a regression, but its candidates cannot be used ({e})", None
    if len(kept[0]) < 2:
        return "folds", (f"final_model=\"auto\": a regression, but {len(kept[0])} trial(s) kept as candidates in "
                         f"{folder} (an ensemble needs 2; Study(candidates=) sets how many are kept)"), None
    return "ensemble", f"final_model=\"auto\": a regression, {len(kept[0])} trials kept as candidates", kept


def ensemble_final(study, url: str, dataset: Dataset, settings: dict[str, Any], task: str,
                   device: str = "cpu", kept: tuple | None = None) -> tuple[EnsembleModel, Selection]:
    """`final_model="ensemble"`: select on the kept candidates' out-of-fold predictions and
    average the chosen trials' fold-models. Refuses, in one line, a study with fewer than two
    candidates here (and says which of its best trials' files are missing). `kept`: the
    candidates already read (by `resolve`), not read again."""
    folder = candidates.folder_for(url, study.study_name)
    found, missing = kept if kept is not None else candidates.read(folder, study, dataset)
    if len(found) < 2:
        where = f"; the files of trial(s) {missing[:5]} are not in {folder} (kept on another machine?)" \
            if missing else ""
        raise SweepsError(f"final_model=\"ensemble\" selects among the study's complete trials kept as candidates, "
                          f"and {len(found)} {'is' if len(found) == 1 else 'are'} here{where}; run more trials "
                          "(with Study(candidates=) above 1), or use final_model=\"folds\".")
    folds = cached_folds(dataset, settings["folds"], settings["seed"], device, scaling=settings["preprocessing"])
    dev = dataset.dev
    fold_of_row = np.empty(len(dev), dtype=np.int64)
    y = dataset.y[dev]
    classification = dataset.classes is not None
    weight, scale = np.ones(len(dev)), np.ones(len(dev))
    balanced = classification and "class-balanced" in settings.get("validation", "plain")
    class_weight = class_weights(folds).cpu().numpy() if balanced else None
    for f, rows in enumerate(folds.val_rows):
        at = np.searchsorted(dev, rows)
        fold_of_row[at] = f
        if class_weight is not None:
            weight[at] = class_weight[f][dataset.y[rows]]
        if not classification:
            scale[at] = folds.preprocessings[f].y_std ** 2
    selection = ensemble_selection([c.trial for c in found], [c.oof for c in found], y, classification, weight,
                                   scale, fold_of_row)
    by_trial = {c.trial: c for c in found}
    parts = [by_trial[t].model() for t in selection.trials]
    first_with: dict = {}  # parts trained on the same folds share one preprocessing: their features
    for t, part in zip(selection.trials, parts):  # are then computed once per prediction
        part.preprocessings = first_with.setdefault(by_trial[t].preprocessing_path, part.preprocessings)
        part.net = part.net.to(device)
    model = EnsembleModel(parts, selection.weights, {"final_model": "ensemble", "trials": selection.trials,
                                                     "weights": selection.weights})
    return model, selection

"""What a study file declares: `Study`, `Space` and the parameter types, plus the loader.

A study file is plain Python that builds one `Study`. Everything here is validated once,
in `__post_init__`, so the rest of the package can trust a `Study` it is handed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from sweeps.errors import SweepsError

TASKS = ("classification", "regression")


# --- parameter types ---------------------------------------------------------------------
@dataclass(frozen=True)
class Float:
    """A float range, sampled with `trial.suggest_float(name, low, high, log=log)`."""

    low: float
    high: float
    log: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> float:
        return _suggest(trial.suggest_float, name, self.low, self.high, self.log)


@dataclass(frozen=True)
class Int:
    """An integer range, sampled with `trial.suggest_int(name, low, high, log=log)`."""

    low: int
    high: int
    log: bool = False

    def suggest(self, trial: optuna.Trial, name: str) -> int:
        return _suggest(trial.suggest_int, name, self.low, self.high, self.log)


def _suggest(suggest: Callable, name: str, low: float, high: float, log: bool) -> Any:
    """`trial.suggest_float/int`, with a resumed study's stored distributions in mind.

    Optuna refuses a parameter whose log flag differs from the study's first trial's. A fixed
    value is the same value on either scale, so it takes the stored flag; a range whose scale
    changed is a user's change: one line with the fix.
    """
    try:
        return suggest(name, low, high, log=log)
    except ValueError as e:
        if "log configuration" not in str(e):
            raise SweepsError(f"Space.{name}: {e} (the study's earlier trials searched it differently); "
                              "keep its kind, or give the study a new name.") from None
        if low == high and (log or low > 0):
            return suggest(name, low, high, log=not log)
        raise SweepsError(f"Space.{name}: the study's earlier trials searched it with log={not log}; keep that "
                          "scale, or give the study a new name.") from None


@dataclass(frozen=True)
class Categorical:
    """A choice among values, sampled with `trial.suggest_categorical(name, choices)`."""

    choices: tuple

    def __init__(self, choices: Sequence) -> None:
        object.__setattr__(self, "choices", tuple(choices))

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        return trial.suggest_categorical(name, self.choices)


Param = Float | Int | Categorical

# How a plain value in `Space(...)` is read: (kind, log scale, valid interval).
# Widths are searched on a log scale like lr: 16 -> 32 matters as much as 256 -> 512.
_NATURAL = {
    "depth": (Int, False, (1, math.inf)),
    "width": (Int, True, (1, math.inf)),
    "dropout": (Float, False, (0.0, 1.0 - 1e-9)),
    "weight_decay": (Float, True, (0.0, math.inf)),
    "lr": (Float, True, (1e-12, math.inf)),
    "batch_size": (Int, False, (1, math.inf)),
    "noise": (Float, False, (0.0, math.inf)),
    "n_frequencies": (Int, False, (1, math.inf)),
    "frequency_scale": (Float, True, (1e-9, math.inf)),
    "embedding_dim": (Int, False, (1, math.inf)),
    "ensemble": (Int, False, (1, 1024)),
    "label_smoothing": (Float, False, (0.0, 1.0 - 1e-9)),
    "beta2": (Float, False, (0.0, 1.0 - 1e-9)),
    "grad_clip": (Float, False, (0.0, math.inf)),
    "freeze": (Int, False, (0, math.inf)),
    "adversarial": (Float, False, (0.0, 100.0)),
}
# Parameters that are a choice among names.
_CHOICES = {
    "class_weight": ("none", "balanced"),
    "resampling": ("none", "over", "under"),
    "importance": ("none", "density_ratio"),
    "embedding": ("none", "periodic", "auto"),
    "schedule": ("constant", "cosine"),
}
# Options left out of trial.params while they keep their "off" value: the plain MLP of
# sweeps 0.1, which is also what `train.NetConfig` assumes for a parameter a trial lacks.
_OPTIONAL_DEFAULTS = {"class_weight": "none", "resampling": "none", "importance": "none", "adversarial": 0.0,
                      "noise": 0.0,
                      "embedding": "none", "ensemble": 1, "label_smoothing": 0.0, "beta2": 0.999,
                      "schedule": "constant", "grad_clip": 0.0, "freeze": 0}
# Searched only when the periodic embeddings are on.
_EMBEDDING_PARAMS = ("n_frequencies", "frequency_scale", "embedding_dim")
# embedding="auto": periodic embeddings when the data has at most this many numeric columns.
# Their cost grows with the numeric columns (a linear map of their own per column and row):
# on digits' 64 pixel columns they made a d1 w32 trial 10-20x slower (benchmarks/bench_engine.py),
# where 6 columns cost 3-5x per trial and a whole sweep on adult about 2x.
AUTO_EMBEDDING_MAX_NUMERIC = 32
CLASS_WEIGHTS = _CHOICES["class_weight"]


def _as_choice(name: str, value: Any) -> Categorical:
    valid = _CHOICES[name]
    choices = value.choices if isinstance(value, Categorical) else (
        tuple(value) if isinstance(value, (list, tuple)) else (value,))
    bad = [c for c in choices if c not in valid]
    if bad or not choices:
        raise SweepsError(f"Space.{name}: choices are {', '.join(repr(v) for v in valid)}, got {bad or value!r}.")
    return Categorical(choices)


def _as_param(name: str, value: Any) -> Param:
    """Turn what the user wrote for one parameter into a checked `Float`/`Int`/`Categorical`."""
    if name in _CHOICES:
        return _as_choice(name, value)
    kind, log, (valid_low, valid_high) = _NATURAL[name]
    if isinstance(value, (Float, Int)) and not isinstance(value, kind):
        other = "Int" if kind is Int else "Float"
        whole = "whole numbers" if kind is Int else "any real number"
        raise SweepsError(f"Space.{name}: takes {whole}; write {other}({value.low!r}, {value.high!r}"
                          f"{', log=True' if value.log else ''}) or a plain (low, high) tuple, "
                          f"not {type(value).__name__}(...).")
    if isinstance(value, (Float, Int, Categorical)):
        param = value
    elif isinstance(value, tuple) and len(value) == 2:
        low, high = value
        param = kind(low, high, log)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        param = kind(value, value, False)  # a fixed value: recorded in trial.params like any other
    elif isinstance(value, list):
        param = Categorical(value)
    else:
        raise SweepsError(
            f"Space.{name}: expected a (low, high) tuple, a single value, or "
            f"Float/Int/Categorical, got {value!r}."
        )

    if isinstance(param, Categorical):
        if not param.choices:
            raise SweepsError(f"Space.{name}: Categorical needs at least one choice.")
        values = param.choices
    else:
        for bound in (param.low, param.high):
            if isinstance(bound, bool) or not isinstance(bound, (int, float)) or not math.isfinite(bound):
                raise SweepsError(f"Space.{name}: bounds must be finite numbers, got {bound!r}.")
        if isinstance(param, Int) and not (float(param.low).is_integer() and float(param.high).is_integer()):
            raise SweepsError(
                f"Space.{name}: takes whole numbers, got (low={param.low}, high={param.high})."
            )
        if param.low > param.high:
            raise SweepsError(
                f"Space.{name}: low <= high must hold, but got (low={param.low}, "
                f"high={param.high}); swap the bounds."
            )
        values = (param.low, param.high)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not (valid_low <= v <= valid_high):
            rule = {"dropout": "0 <= dropout < 1"}.get(name, f"{name} >= {valid_low:g}")
            raise SweepsError(f"Space.{name}: {rule} must hold, got {v!r}.")
    if not isinstance(param, Categorical) and param.log and param.low <= 0:
        linear = f"{type(param).__name__}({param.low}, {param.high})"
        raise SweepsError(
            f"Space.{name}: a log-scale range needs low > 0, but got (low={param.low}, "
            f"high={param.high}); use a small positive low such as 1e-6, or {linear} for a linear range."
        )
    if isinstance(param, Int) or (isinstance(param, Categorical) and kind is Int):
        if any(float(v) != int(v) for v in values):
            raise SweepsError(f"Space.{name}: takes whole numbers, got {values!r}.")
        if isinstance(param, Int):
            param = Int(int(param.low), int(param.high), param.log)
        else:
            param = Categorical([int(v) for v in param.choices])
    return param


@dataclass(frozen=True, kw_only=True)
class Space:
    """The search space of the network: each field is a range, a fixed value or a choice.

    A `(low, high)` tuple takes each parameter's natural scale: integers for depth, width
    and batch_size (width on a log scale), log scale for lr and weight_decay, linear for
    dropout. A single value fixes the parameter; `Float`, `Int` and `Categorical` give
    explicit control.

    Example:
        >>> Space(depth=(1, 3), width=(16, 256), lr=Float(1e-4, 1e-1, log=True))
    """

    depth: Any = (1, 4)
    width: Any = (16, 512)
    dropout: Any = (0.0, 0.5)
    weight_decay: Any = (1e-6, 1e-1)
    lr: Any = (1e-4, 1e-1)
    batch_size: Any = 128
    class_weight: Any = "none"  # "balanced", or Categorical(["none", "balanced"]) to search it
    # classification: "over" / "under"-sample to balanced classes, drawn afresh every epoch;
    # Categorical(["none", "over", "under"]) to search it (README, "The methodology's remedies")
    resampling: Any = "none"
    # with Study(target_data=...): "density_ratio" weighs each training row by how much more
    # likely it is under the target rows than the training rows (a domain classifier, clipped)
    importance: Any = "none"
    # with Study(target_data=...): the weight λ of domain-adversarial training (DANN): hidden
    # features a domain classifier cannot tell from the target rows'; e.g. (0.01, 1.0) to search it
    adversarial: Any = 0.0
    noise: Any = 0.0  # Gaussian input noise (std in standardized units), e.g. (0.0, 0.3)
    # The modern tabular-MLP recipe (README, "Models"): each fixed or searched like the rest.
    embedding: Any = "auto"  # "periodic" (PLR embeddings of the numeric columns), "none", or "auto":
    # periodic for at most AUTO_EMBEDDING_MAX_NUMERIC numeric columns
    n_frequencies: Any = 16  # periodic embeddings: frequencies per feature
    frequency_scale: Any = (0.01, 30.0)  # periodic embeddings: std of the initial frequencies (log scale)
    embedding_dim: Any = 16  # periodic embeddings: outputs per feature
    ensemble: Any = 1  # members of the shared-weight ensemble (TabM-mini) in every fold-model
    label_smoothing: Any = 0.0  # classification: training target smoothing (values stay unsmoothed)
    beta2: Any = 0.95  # AdamW's second-moment decay
    schedule: Any = "constant"  # or "cosine": warm-up, then cosine decay over max_epochs
    grad_clip: Any = 0.0  # per fold-model gradient-norm limit; 0: off
    # with Study(init_from=...): the first hidden layers kept as loaded, e.g. (0, 2) to search
    # between fine-tuning everything (0) and feature extraction (README, "The methodology's remedies")
    freeze: Any = 0

    def __post_init__(self) -> None:
        for name in PARAMS:
            object.__setattr__(self, name, _as_param(name, getattr(self, name)))

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample one network configuration for `trial`.

        The embeddings' settings are drawn only for a trial whose `embedding` is "periodic";
        options fixed at their "off" value stay out of `trial.params`.
        """
        params = {}
        for name in PARAMS:
            param = getattr(self, name)
            if name in _OPTIONAL_DEFAULTS and _is_fixed_at(param, _OPTIONAL_DEFAULTS[name]):
                continue  # an option left off stays out of trial.params
            if name in _EMBEDDING_PARAMS and params.get("embedding", "none") != "periodic":
                continue
            params[name] = param.suggest(trial, name)
        return params

    def resolved(self, n_numeric: int) -> Space:
        """This space with embedding="auto" decided for data with `n_numeric` numeric columns."""
        if not isinstance(self.embedding, Categorical) or "auto" not in self.embedding.choices:
            return self
        on = "periodic" if 1 <= n_numeric <= AUTO_EMBEDDING_MAX_NUMERIC else "none"
        choices = list(dict.fromkeys(on if c == "auto" else c for c in self.embedding.choices))
        return dataclasses.replace(self, embedding=Categorical(choices))


# Suggestion order: `embedding` before the settings that depend on it.
PARAMS = ("depth", "width", "dropout", "weight_decay", "lr", "batch_size", "class_weight", "resampling",
          "importance", "adversarial", "noise", "embedding", *_EMBEDDING_PARAMS, "ensemble", "label_smoothing", "beta2",
          "schedule", "grad_clip", "freeze")


def _is_fixed_at(param: Param, value: Any) -> bool:
    if isinstance(param, Categorical):
        return param.choices == (value,)
    return param.low == param.high == value


def check_config(config: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """Check a configuration dict (from a define-by-run space or a file) and fill defaults."""
    if not isinstance(config, dict):
        raise SweepsError(f"{where}: a space function must return a dict, got {type(config).__name__}.")
    unknown = sorted(set(config) - set(PARAMS))
    if unknown:
        raise SweepsError(f"{where}: unknown parameter(s) {unknown}; valid ones are {list(PARAMS)}.")
    missing = sorted({"depth", "width", "dropout", "weight_decay", "lr"} - set(config))
    if missing:
        raise SweepsError(f"{where}: missing parameter(s) {missing}.")
    checked = {"batch_size": 128, **config}
    for name, value in checked.items():
        if isinstance(value, (list, tuple, dict)) or value is None:
            raise SweepsError(f"{where}: {name} must be one value, got {value!r}.")
        try:
            _as_param(name, value)
        except SweepsError as e:
            raise SweepsError(f"{where}: {e}") from None
        if _NATURAL.get(name, (None,))[0] is Int:
            checked[name] = int(value)  # 8.0 -> 8: shapes are integers
    if checked.get("embedding") == "auto":
        raise SweepsError(f"{where}: embedding must be 'none' or 'periodic' here ('auto' is decided by a Space "
                          "for its data).")
    return checked


@dataclass(frozen=True, kw_only=True)
class Study:
    """One sweep, declared in a study file.

    Args:
        name: the Optuna study name; also names the database, `storage/<name>.db`.
        task: "classification" (cross-entropy loss, accuracy) or "regression" (MSE on the
            standardized target, RMSE in the target's units).
        data: a function returning `(X, y)`, or the `(X, y)` pair itself. Called once per process.
        space: a `Space`, or a function `space(trial) -> dict` for conditional spaces.
        folds: k of the k-fold cross-validation that scores each trial.
        max_epochs: the most epochs one fold trains.
        patience: epochs without a better validation loss before a fold stops.
        test_size: fraction of rows held out, once, as the final test set.
        n_trials: the number of finished trials the study aims for; a rerun tops it up.
        timeout: seconds after which no new trial starts (None: no limit).
        seed: seeds the held-out split, the folds, the sampler and every trial.
        sampler: any Optuna sampler (default: TPE seeded from `seed`).
        pruner: any Optuna pruner (default: median of the folds' mean validation loss).
        test_data: optional `(X, y)` loader of a separate test set (e.g. another source);
            then it is the held-out test set and `test_size` is not used.
        init_from: a model file saved by `evaluate` (on other data with the same features):
            every net starts from its weights and is fine-tuned (transfer learning); depth and
            width are the saved model's, the rest of the space (lr, ...) is searched.
        preprocessing: how numeric columns are scaled, fitted per fold: "auto" (the quantile
            transform for continuous columns, standard scaling for columns of few levels),
            "quantile" (ranks mapped to a normal), "standard" (mean and std) or "robust"
            (median and IQR, then smooth clipping). Categorical columns are one-hot encoded.
        final_model: what `evaluate` scores and saves: "folds" (the chosen trial's k
            fold-models, averaged), "refit" (one net on all non-test rows) or "refit-seeds"
            (several such nets with different seeds, averaged).
        stop: "converged" ends the study when further trials are unlikely to beat the best by
            more than the folds' noise (`search.converged`); `n_trials` and `timeout` stay caps.
        groups: each data row's source, to monitor the model per source: a column name of the
            table `data` returns (the column stays a feature), or an array with one entry per
            row of `data`. Every trial records its validation loss and metric per group.
        early_stopping: "mean" (each fold stops on its validation loss over all rows) or
            "worst_group" (on its worst group's loss, which is then the trial's value; needs
            `groups`).
        target_data: unlabeled rows of the distribution the model will serve (a loader or the
            rows; an `(X, y)` pair's `y` is not used), for `Space(importance="density_ratio")`.
            Never the held-out test rows: overlap is refused.

    Example:
        >>> from sklearn.datasets import load_digits
        >>> study = Study(name="digits", task="classification",
        ...               data=lambda: load_digits(return_X_y=True),
        ...               space=Space(depth=(1, 3), width=(16, 256)))
    """

    name: str
    task: str
    data: Any
    space: Space | Callable[[optuna.Trial], dict] = field(default_factory=Space)
    folds: int = 5
    max_epochs: int = 100
    patience: int = 10
    test_size: float = 0.2
    n_trials: int = 50
    timeout: float | None = None
    seed: int = 0
    sampler: optuna.samplers.BaseSampler | None = None
    pruner: optuna.pruners.BasePruner | None = None
    test_data: Any = None
    init_from: str | Path | None = None
    preprocessing: str = "auto"
    final_model: str = "folds"
    stop: str | None = None
    groups: Any = None
    early_stopping: str = "mean"
    target_data: Any = None

    def __post_init__(self) -> None:
        from sweeps.storage import check_name

        check_name(self.name)
        if self.task not in TASKS:
            raise SweepsError(f"Study.task: must be 'classification' or 'regression', got {self.task!r}.")
        if self.data is None:
            raise SweepsError("Study.data: give a function returning (X, y), e.g. "
                              "data=lambda: load_digits(return_X_y=True).")
        if isinstance(self.space, tuple) or not (isinstance(self.space, Space) or callable(self.space)):
            raise SweepsError(
                f"Study.space: must be a Space(...) or a function space(trial) -> dict, got {self.space!r}."
            )
        _check_int("folds", self.folds, 2, "use at least 2 folds (5 is usual)")
        _check_int("max_epochs", self.max_epochs, 1, "use at least 1 epoch")
        _check_int("patience", self.patience, 1, "use at least 1 epoch of patience")
        _check_int("n_trials", self.n_trials, 1, "use at least 1 trial")
        _check_int("seed", self.seed, 0, "use a non-negative integer seed")
        if self.seed >= 2**32:
            raise SweepsError(f"Study.seed: must be below 2**32 (numpy and scikit-learn take 32-bit seeds), "
                              f"got {self.seed}; use a smaller seed.")
        if isinstance(self.test_size, bool) or not isinstance(self.test_size, (int, float)) \
                or not 0.0 < self.test_size < 1.0:
            raise SweepsError(f"Study.test_size: must be a fraction with 0 < test_size < 1, got {self.test_size!r}.")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float))
                                         or not math.isfinite(self.timeout) or self.timeout <= 0):
            raise SweepsError(f"Study.timeout: must be a positive number of seconds or None, got {self.timeout!r}.")
        if self.sampler is not None and not isinstance(self.sampler, optuna.samplers.BaseSampler):
            raise SweepsError(f"Study.sampler: must be an Optuna sampler, got {self.sampler!r}.")
        if self.init_from is not None:
            if not isinstance(self.init_from, (str, Path)):
                raise SweepsError(f"Study.init_from: must be the path of a saved model, got {self.init_from!r}.")
            if not isinstance(self.space, Space):
                raise SweepsError("Study.init_from: needs a Space (depth and width come from the saved model).")
        elif isinstance(self.space, Space) and not _is_fixed_at(self.space.freeze, 0):
            raise SweepsError("Space.freeze: keeps the first layers of a loaded model as they are; it needs "
                              "Study(init_from=PATH of a model saved by evaluate), or remove freeze=.")
        from sweeps.preprocess import SCALINGS

        if self.preprocessing not in SCALINGS:
            raise SweepsError(f"Study.preprocessing: must be one of {', '.join(repr(v) for v in SCALINGS)}, "
                              f"got {self.preprocessing!r}.")
        if self.stop not in (None, "converged"):
            raise SweepsError(f"Study.stop: must be None or 'converged', got {self.stop!r}.")
        if self.final_model not in ("folds", "refit", "refit-seeds"):
            raise SweepsError(f"Study.final_model: must be 'folds', 'refit' or 'refit-seeds', got {self.final_model!r}.")
        if self.groups is not None and not isinstance(self.groups, str) and not hasattr(self.groups, "__len__"):
            raise SweepsError(f"Study.groups: a column name of the data's table, or one entry per data row; got "
                              f"{self.groups!r}.")
        if self.early_stopping not in ("mean", "worst_group"):
            raise SweepsError(f"Study.early_stopping: must be 'mean' or 'worst_group', got {self.early_stopping!r}.")
        if self.early_stopping == "worst_group" and self.groups is None:
            raise SweepsError("Study.early_stopping='worst_group': needs Study(groups=...), the source of each "
                              "row, to know the groups.")
        if isinstance(self.space, Space) and not _is_fixed_at(self.space.importance, "none") \
                and self.target_data is None:
            raise SweepsError("Space.importance: weighs training rows by their likeness to the target rows; it "
                              "needs Study(target_data=unlabeled rows of the deployment distribution).")
        if isinstance(self.space, Space) and not _is_fixed_at(self.space.adversarial, 0.0) \
                and self.target_data is None:
            raise SweepsError("Space.adversarial: trains features a domain classifier cannot tell from the target "
                              "rows'; it needs Study(target_data=unlabeled rows of the deployment distribution).")
        if self.task == "regression" and isinstance(self.space, Space) \
                and not _is_fixed_at(self.space.resampling, "none"):
            raise SweepsError("Space.resampling: re-sampling balances classes, and a regression has none; "
                              "remove resampling= from the Space (or use task='classification').")
        if self.pruner is not None and not isinstance(self.pruner, optuna.pruners.BasePruner):
            raise SweepsError(f"Study.pruner: must be an Optuna pruner, got {self.pruner!r}.")

    def resolved(self, n_numeric: int) -> Study:
        """The study with its space's "auto" choices decided for data with `n_numeric` numeric columns."""
        if not isinstance(self.space, Space):
            return self
        return dataclasses.replace(self, space=self.space.resolved(n_numeric))

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """The network configuration of `trial`, from the `Space` or the space function."""
        if isinstance(self.space, Space):
            return self.space.suggest(trial)
        try:
            config = self.space(trial)
        except (SweepsError, optuna.TrialPruned):
            raise
        except Exception as e:  # the user's function: one line, with its own words
            raise SweepsError(f"Study.space(trial) raised {type(e).__name__}: {e}; fix the space function.") from None
        config = check_config(config, where="Study.space(trial)")
        if config.get("importance", "none") != "none" and self.target_data is None:
            raise SweepsError("Study.space(trial): importance needs Study(target_data=...), the target rows.")
        if config.get("adversarial", 0.0) and self.target_data is None:
            raise SweepsError("Study.space(trial): adversarial needs Study(target_data=...), the target rows.")
        if config.get("freeze"):  # transfer takes a Space (init_from refuses a function)
            raise SweepsError("Study.space(trial): freeze keeps the first layers of a loaded model, which needs "
                              "Study(init_from=...) with a Space(freeze=...), not a space function.")
        return config

    def replace(self, **changes: Any) -> Study:
        """A copy with some fields changed (and validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def balanced_validation(self) -> bool:
        """Whether trials are scored by the class-balanced validation loss.

        When the space allows class weighting or re-sampling, balance is what matters: every
        trial, balanced or not, is then scored by the class-balanced loss, so values stay on
        one scale.
        """
        return isinstance(self.space, Space) and (
            "balanced" in self.space.class_weight.choices or not _is_fixed_at(self.space.resampling, "none"))

    @property
    def validation(self) -> str:
        """How a trial's validation loss is measured: "plain", "class-balanced", and either
        followed by ", worst group" when folds stop on (and trials are scored by) their worst
        group. Stored in the settings: it defines what a trial's value means."""
        weighting = "class-balanced" if self.balanced_validation else "plain"
        return weighting + (", worst group" if self.early_stopping == "worst_group" else "")

    @property
    def settings(self) -> dict[str, Any]:
        """The settings that define what a trial's value means; stored on the Optuna study."""
        return {"task": self.task, "folds": self.folds, "max_epochs": self.max_epochs,
                "patience": self.patience, "test_size": self.test_size, "seed": self.seed,
                "validation": self.validation,
                "preprocessing": self.preprocessing}

    def check_space(self) -> None:
        """Draw one configuration on a throwaway in-memory trial: a space function that raises
        or returns bad values fails here, before any storage is touched."""
        study = optuna.create_study(storage=optuna.storages.InMemoryStorage(),
                                    sampler=optuna.samplers.RandomSampler(seed=self.seed))
        self.suggest(study.ask())


def _check_int(name: str, value: Any, minimum: int, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise SweepsError(f"Study.{name}: must be an integer >= {minimum}, got {value!r}; {fix}.")


# --- loading a study file ----------------------------------------------------------------
def load_study_file(path: str | Path) -> Study:
    """Run a study file and return the `Study` it declares.

    Every problem (missing file, syntax error, exception, invalid field, no `Study`)
    becomes one `SweepsError` that starts with the file's path.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepsError(f"{path}: no such study file; give the path of a .py file that builds a Study.")
    module_name = f"_sweeps_study_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SweepsError(f"{path}: cannot be loaded as Python; study files end in .py.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    from sweeps.table import STUDY_DIR

    token = STUDY_DIR.set(path.resolve().parent)  # relative Table paths: next to the study file
    try:
        spec.loader.exec_module(module)
    except SweepsError as e:
        raise SweepsError(f"{path}: {e}") from None
    except SyntaxError as e:
        raise SweepsError(f"{path}:{e.lineno}: syntax error: {e.msg}; fix the study file.") from None
    except Exception as e:  # the user's code failed: say where, in one line
        line = _user_line(e, path)
        raise SweepsError(f"{path}{line}: {type(e).__name__}: {e}; fix the study file.") from None
    finally:
        STUDY_DIR.reset(token)

    studies = {k: v for k, v in vars(module).items() if isinstance(v, Study)}
    if isinstance(studies.get("study"), Study):
        return studies["study"]
    if len(studies) == 1:
        return next(iter(studies.values()))
    if not studies:
        raise SweepsError(
            f"{path}: declares no Study; add `study = Study(name=..., task=..., data=..., space=Space(...))` "
            "(from sweeps import Study, Space)."
        )
    raise SweepsError(f"{path}: declares several Study objects ({', '.join(sorted(studies))}); "
                      "name the one to run `study`.")


def _user_line(error: BaseException, path: Path) -> str:
    """':LINE' of the deepest frame inside the study file, for error messages."""
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename) == path]
    return f":{frames[-1].lineno}" if frames else ""

"""What a study file declares: `Study`, and the loader that runs a study file.

A study file is plain Python that builds one `Study`. Everything here is validated once,
in `__post_init__`, so the rest of the package can trust a `Study` it is handed.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from sweeps.errors import SweepsError
from sweeps.spec.options import EARLY_STOPPING, FINAL_MODELS, SCALINGS, STOPS, TASKS
from sweeps.spec.space import Space, check_config
from sweeps.spec.table import STUDY_DIR

# Study names become file names and SQLite URLs. Letters, digits, '_', '-', '.' and inner
# spaces never mean anything else there: no '/' or '\' (folders), '%' (SQLAlchemy
# percent-decodes URLs: %2F is '/'), '?' or '#' (a URL's query), ':' (sweeps' own
# companion studies use it).
STUDY_NAME = re.compile(r"\w(?:[\w. -]{0,98}\w)?\Z")
STUDY_NAME_RULE = ("letters, digits, '_', '-', '.' and inner spaces, starting and ending with a "
                   "letter or digit, at most 100 characters")


def check_name(name: object) -> None:
    if not isinstance(name, str) or not STUDY_NAME.match(name):
        raise SweepsError(f"Study.name: {name!r} names the study's database file, so it may hold only "
                          f"{STUDY_NAME_RULE}; e.g. 'digits-v2'.")


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
            fold-models, averaged), "refit" (one net on all non-test rows), "refit-seeds"
            (several such nets with different seeds, averaged), "ensemble" (a weighted set of
            the best trials' fold-models, selected on their out-of-fold predictions) or "auto"
            (the default: "ensemble" for a regression with at least two trials kept as
            candidates, else "folds"; the evaluation says which, and why).
        stop: "converged" ends the study when further trials are unlikely to beat the best by
            more than the folds' noise (`search.converged`); `n_trials` and `timeout` stay caps.
        groups: each data row's source, to monitor the model per source: a column name of the
            table `data` returns (the column stays a feature), or an array with one entry per
            row of `data`. Every trial records its validation loss and metric per group.
        early_stopping: "mean" (each fold stops on its validation loss over all rows) or
            "worst_group" (on its worst group's loss, which is then the trial's value; needs
            `groups`).
        candidates: how many of the best complete trials keep their out-of-fold predictions and
            fold-models beside the database, for final_model="ensemble" (0: none).
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
    final_model: str = "auto"
    stop: str | None = None
    groups: Any = None
    early_stopping: str = "mean"
    target_data: Any = None
    candidates: int = 20

    def __post_init__(self) -> None:
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
        _check_int("candidates", self.candidates, 0, "use 0 to keep no trial for an ensemble")
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
        elif isinstance(self.space, Space) and not self.space.off("freeze"):
            raise SweepsError("Space.freeze: keeps the first layers of a loaded model as they are; it needs "
                              "Study(init_from=PATH of a model saved by evaluate), or remove freeze=.")
        if self.preprocessing not in SCALINGS:
            raise SweepsError(f"Study.preprocessing: must be one of {', '.join(repr(v) for v in SCALINGS)}, "
                              f"got {self.preprocessing!r}.")
        if self.stop not in STOPS:
            raise SweepsError(f"Study.stop: must be None or 'converged', got {self.stop!r}.")
        if self.final_model not in FINAL_MODELS:
            raise SweepsError(f"Study.final_model: must be one of {', '.join(repr(v) for v in FINAL_MODELS)}, "
                              f"got {self.final_model!r}.")
        if self.groups is not None and not isinstance(self.groups, str) and not hasattr(self.groups, "__len__"):
            raise SweepsError(f"Study.groups: a column name of the data's table, or one entry per data row; got "
                              f"{self.groups!r}.")
        if self.early_stopping not in EARLY_STOPPING:
            raise SweepsError(f"Study.early_stopping: must be 'mean' or 'worst_group', got {self.early_stopping!r}.")
        if self.early_stopping == "worst_group" and self.groups is None:
            raise SweepsError("Study.early_stopping='worst_group': needs Study(groups=...), the source of each "
                              "row, to know the groups.")
        if isinstance(self.space, Space) and not self.space.off("importance") and self.target_data is None:
            raise SweepsError("Space.importance: weighs training rows by their likeness to the target rows; it "
                              "needs Study(target_data=unlabeled rows of the deployment distribution).")
        if isinstance(self.space, Space) and not self.space.off("adversarial") and self.target_data is None:
            raise SweepsError("Space.adversarial: trains features a domain classifier cannot tell from the target "
                              "rows'; it needs Study(target_data=unlabeled rows of the deployment distribution).")
        if self.task == "regression" and isinstance(self.space, Space) and not self.space.off("resampling"):
            raise SweepsError("Space.resampling: re-sampling balances classes, and a regression has none; "
                              "remove resampling= from the Space (or use task='classification').")
        if self.task == "classification" and isinstance(self.space, Space) and not self.space.off("huber"):
            raise SweepsError("Space.huber: the Huber loss is a regression loss, and a classification trains on "
                              "cross-entropy; remove huber= from the Space (or use task='regression').")
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
            "balanced" in self.space.class_weight.choices or not self.space.off("resampling"))

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
def load_study(path: str | Path) -> Study:
    """The `Study` of another study file, to build on it in this one:

        parent = load_study("digits.py")
        study = parent.replace(name="digits-wider", space=parent.space.replace(width=(16, 1024)))

    A relative path is taken from the folder of the study file that calls it (from the
    current folder elsewhere), as `Table` paths are. `python -m sweeps.run --follow` writes
    its rounds this way: each names what it changed and nothing else.
    """
    path = Path(path)
    base = STUDY_DIR.get()
    return load_study_file(base / path if base is not None and not path.is_absolute() else path)


def load_study_file(path: str | Path) -> Study:
    """Run a study file and return the `Study` it declares.

    Every problem (missing file, syntax error, exception, invalid field, no `Study`)
    becomes one `SweepsError` that starts with the file's path.
    """
    path = Path(path)
    if not path.is_file():
        raise SweepsError(f"{Path(path).absolute()}: no such study file; give the path of a .py file that "
                          "builds a Study.")
    module_name = f"_sweeps_study_{abs(hash(str(path.resolve())))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise SweepsError(f"{path}: cannot be loaded as Python; study files end in .py.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
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

"""The parameter types of a search space: Optuna's `suggest_float`, `suggest_int` and
`suggest_categorical`, as values a study file can hold."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from sweeps.errors import SweepsError


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


def is_fixed_at(param: Param, value: Any) -> bool:
    """Whether `param` can take `value` only."""
    if isinstance(param, Categorical):
        return param.choices == (value,)
    return param.low == param.high == value

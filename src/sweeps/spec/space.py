"""The search space of the network: `Space`, and the check of a configuration given as a dict.

What each field means, its natural scale, its valid values and its default are rows of
`spec.options.OPTIONS`: this module only reads them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import optuna

from sweeps.errors import SweepsError
from sweeps.spec.options import AUTO_EMBEDDING_MAX_NUMERIC, OPTIONS, PARAMS, REQUIRED, Option
from sweeps.spec.params import Categorical, Float, Int, Param, is_fixed_at


def _as_choice(option: Option, value: Any) -> Categorical:
    valid = option.choices
    choices = value.choices if isinstance(value, Categorical) else (
        tuple(value) if isinstance(value, (list, tuple)) else (value,))
    bad = [c for c in choices if c not in valid]
    if bad or not choices:
        raise SweepsError(f"Space.{option.name}: choices are {', '.join(repr(v) for v in valid)}, "
                          f"got {bad or value!r}.")
    return Categorical(choices)


def as_param(name: str, value: Any) -> Param:
    """Turn what the user wrote for one parameter into a checked `Float`/`Int`/`Categorical`."""
    option = OPTIONS[name]
    if option.kind == "choice":
        return _as_choice(option, value)
    kind = Int if option.kind == "int" else Float
    valid_low, valid_high = option.valid
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
        param = kind(low, high, option.log)
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
            raise SweepsError(f"Space.{name}: {option.rule} must hold, got {v!r}.")
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


def _default(name: str) -> Any:
    return OPTIONS[name].default


@dataclass(frozen=True, kw_only=True)
class Space:
    """The search space of the network: each field is a range, a fixed value or a choice.

    A `(low, high)` tuple takes each parameter's natural scale: integers for depth, width
    and batch_size (width on a log scale), log scale for lr and weight_decay, linear for
    dropout. A single value fixes the parameter; `Float`, `Int` and `Categorical` give
    explicit control. What each field means, and its default, is on the options page of the
    docs (one row each in `sweeps.spec.options`).

    Example:
        >>> space = Space(depth=(1, 3), width=(16, 256), lr=Float(1e-4, 1e-1, log=True))
        >>> space.depth
        Int(low=1, high=3, log=False)
    """

    depth: Any = _default("depth")
    width: Any = _default("width")
    dropout: Any = _default("dropout")
    weight_decay: Any = _default("weight_decay")
    lr: Any = _default("lr")
    batch_size: Any = _default("batch_size")
    class_weight: Any = _default("class_weight")
    resampling: Any = _default("resampling")
    importance: Any = _default("importance")
    adversarial: Any = _default("adversarial")
    noise: Any = _default("noise")
    embedding: Any = _default("embedding")
    n_frequencies: Any = _default("n_frequencies")
    frequency_scale: Any = _default("frequency_scale")
    embedding_dim: Any = _default("embedding_dim")
    category_dim: Any = _default("category_dim")
    ensemble: Any = _default("ensemble")
    label_smoothing: Any = _default("label_smoothing")
    huber: Any = _default("huber")
    beta2: Any = _default("beta2")
    schedule: Any = _default("schedule")
    grad_clip: Any = _default("grad_clip")
    freeze: Any = _default("freeze")

    def __post_init__(self) -> None:
        for name in PARAMS:
            object.__setattr__(self, name, as_param(name, getattr(self, name)))

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Sample one network configuration for `trial`.

        The embeddings' settings are drawn only for a trial whose `embedding` is "periodic";
        options fixed at their "off" value stay out of `trial.params`.
        """
        params = {}
        for name in PARAMS:
            option, param = OPTIONS[name], getattr(self, name)
            if option.optional and is_fixed_at(param, option.fallback):
                continue  # an option left off stays out of trial.params
            if option.periodic_only and params.get("embedding", "none") != "periodic":
                continue
            params[name] = param.suggest(trial, name)
        return params

    def resolved(self, n_numeric: int) -> Space:
        """This space with embedding="auto" decided for data with `n_numeric` numeric columns:
        searched between "none" and "periodic" where the embeddings' cost is bearable, so the
        evidence of the folds decides (they help some tables and make others slower and worse:
        docs/benchmarks.md, "Embeddings chosen by evidence"); "none" beyond that."""
        if not isinstance(self.embedding, Categorical) or "auto" not in self.embedding.choices:
            return self
        on = ["none", "periodic"] if 1 <= n_numeric <= AUTO_EMBEDDING_MAX_NUMERIC else ["none"]
        choices = list(dict.fromkeys(c for choice in self.embedding.choices
                                     for c in (on if choice == "auto" else [choice])))
        return dataclasses.replace(self, embedding=Categorical(choices))

    def replace(self, **changes: Any) -> Space:
        """A copy with some fields changed (and checked again), e.g. `space.replace(depth=(1, 6))`."""
        return dataclasses.replace(self, **changes)

    def off(self, name: str) -> bool:
        """Whether option `name` can only take its "off" value (its fallback)."""
        return is_fixed_at(getattr(self, name), OPTIONS[name].fallback)

    def highest(self, name: str) -> Any:
        """The largest value `name` can take."""
        param = getattr(self, name)
        return max(param.choices) if isinstance(param, Categorical) else param.high

    def lowest(self, name: str) -> Any:
        """The smallest value `name` can take."""
        param = getattr(self, name)
        return min(param.choices) if isinstance(param, Categorical) else param.low


def check_config(config: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """Check a configuration dict (from a define-by-run space or a file) and fill what every
    configuration holds (`batch_size`); the other options' fallbacks apply where it trains."""
    if not isinstance(config, dict):
        raise SweepsError(f"{where}: a space function must return a dict, got {type(config).__name__}.")
    unknown = sorted(set(config) - set(PARAMS))
    if unknown:
        raise SweepsError(f"{where}: unknown parameter(s) {unknown}; valid ones are {list(PARAMS)}.")
    missing = sorted(name for name, o in OPTIONS.items() if o.fallback is REQUIRED and name not in config)
    if missing:
        raise SweepsError(f"{where}: missing parameter(s) {missing}.")
    always = {name: o.fallback for name, o in OPTIONS.items()
              if o.fallback is not REQUIRED and not o.optional and not o.periodic_only}
    checked = {**always, **config}
    for name, value in checked.items():
        if isinstance(value, (list, tuple, dict)) or value is None:
            raise SweepsError(f"{where}: {name} must be one value, got {value!r}.")
        try:
            as_param(name, value)
        except SweepsError as e:
            raise SweepsError(f"{where}: {e}") from None
        if OPTIONS[name].kind == "int":
            checked[name] = int(value)  # 8.0 -> 8: shapes are integers
    if checked.get("embedding") == "auto":
        raise SweepsError(f"{where}: embedding must be 'none' or 'periodic' here ('auto' is decided by a Space "
                          "for its data).")
    return checked

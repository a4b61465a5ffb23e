"""From a diagnosis to the next study: which problem to act on, and what to change.

The methodology (docs/diagnose.md) reads the evidence in a fixed order: is the training loss
high (the model is too weak, or gradient descent does not find a good solution), then is the
validation loss far above it (overfitting), then is the test loss far from the validation
loss (mismatch). Two refinements of that order, both about what the evidence can show:

- optimization before bias: when deeper nets train worse than shallower ones, or the best
  trials crowd against the lowest learning rate the space allows, the nets' high training
  loss says nothing about capacity yet; widening them would only add more badly trained nets.
- mismatch never here: it needs the held-out rows, which no round looks at. It is judged
  once, at the end, on the winning study, and its remedies need data only the user has.

Each remedy is a `Remedy`: the changes to `Space` and `Study` fields, and their description
in words. A problem that was already acted on from the same study gets the next, stronger
step (`step`); when none is left, the loop stops and says why (`Stop`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from optuna.trial import FrozenTrial

from sweeps.results.diagnose import Diagnosis
from sweeps.spec.options import OPTIONS
from sweeps.spec.params import Categorical, Float, Int
from sweeps.spec.space import Space
from sweeps.spec.study import Study

# How far one round moves a range: far enough that a real limit shows in one round of trials,
# not so far that the space's density of trials drops by more than the change can win.
DEPTH_STEP = 2  # hidden layers added to depth's upper end
DEPTH_CAP = 8
WIDTH_FACTOR = 4  # width's upper end multiplied by this...
WIDTH_FLOOR = 64  # ...and at least this (a space of 2-4 units gains little from x4)
WIDTH_CAP = 4096
LR_FACTOR = 10  # the learning rate's lower end divided by this
WEIGHT_DECAY_FACTOR = 10
WEIGHT_DECAY_CAP = 1.0  # AdamW's decoupled decay of 1 per step and unit of lr: beyond, weights vanish
DROPOUT_STEP = 0.2
DROPOUT_CAP = 0.7
NOISE_RANGE = (0.0, 0.3)  # input noise, in standardized units
ENSEMBLE_MEMBERS = 4


@dataclass(frozen=True)
class Remedy:
    problem: str  # the verdict acted on: "model bias", "optimization" or "overfitting"
    why: str  # the verdict's summary, with its numbers
    change: str  # what changes, in words: "depth (1, 1) -> (1, 3); width (2, 4) -> (2, 64)"
    space: dict[str, Any] = field(default_factory=dict)  # Space fields to replace
    study: dict[str, Any] = field(default_factory=dict)  # Study fields to replace
    notes: tuple[str, ...] = ()  # said in the report, not acted on ("more data would still help")


@dataclass(frozen=True)
class Stop:
    reason: str


def next_remedy(spec: Study, diagnosis: Diagnosis, trials: list[FrozenTrial], tried: dict[str, int]) -> Remedy | Stop:
    """What to change in `spec` after `diagnosis` (of its complete `trials`); `tried` counts, per
    problem, the rounds already derived from `spec` for it."""
    if not isinstance(spec.space, Space):
        return Stop("the study's space is a function (a define-by-run space): --follow changes ranges of a Space, "
                    "so apply the diagnosis's remedies to the function by hand")
    verdict = {v.problem: v for v in diagnosis.verdicts}
    lr_at_bottom = _lr_at_bottom(spec.space, trials)
    at_chance = _at_chance(trials, diagnosis.chance)
    below = bool(lr_at_bottom or at_chance)  # the good learning rates lie below the range
    order = []
    if verdict["optimization"].status == "yes" or (below and verdict["model bias"].status == "yes"):
        order.append("optimization")
    if verdict["model bias"].status == "yes":
        order.append("model bias")
    if verdict["overfitting"].status == "yes":
        order.append("overfitting")
    if not order:
        found = [f"{v.problem}: {v.status}, {v.summary.rstrip('.')}" for v in diagnosis.verdicts
                 if v.problem != "mismatch"]
        plain = ""
        if any("add features" in r for r in verdict["model bias"].remedies):  # a baseline does as well
            plain = "; capacity is not what limits it either: add features, or more informative ones"
        return Stop("nothing limits it (" + "; ".join(found) + ")" + plain)
    for problem in order:
        why = verdict[problem].summary
        if problem == "optimization" and at_chance:
            why = (f"the nets train no better than chance (best training loss {at_chance:.4f}, chance level "
                   f"{diagnosis.chance:.4f}): any of them could at least predict the class frequencies (the mean), "
                   "so gradient descent fails, and a learning rate too high is the first suspect")
        elif problem == "optimization" and verdict["optimization"].status != "yes":
            why = (f"the best trials' learning rate sits at the bottom of its range ({lr_at_bottom}), and the nets "
                   f"train no better than a simple baseline ({verdict['model bias'].summary})")
        step = tried.get(problem, 0)
        if problem == "optimization":
            remedy = _optimization(spec.space, trials, step, why, below)
        elif problem == "model bias":
            remedy = _bias(spec.space, step, why)
        else:
            remedy = _overfitting(spec.space, step, why, verdict[problem])
        if remedy is not None:
            return remedy
    return Stop(f"{' and '.join(order)} still limit it, and --follow has no step left for it (the ranges are at "
                "their caps): apply the diagnosis's other remedies by hand (more informative features, more data)")


def diverged(spec: Study, trials: list[FrozenTrial], tried: dict[str, int]) -> Remedy | Stop:
    """What to change when no trial of `spec` finished (there is nothing to diagnose): a loss
    that became NaN or infinite prunes its trial, so a study whose every trial was pruned or
    failed trains with learning rates too high, far more often than anything else."""
    if not isinstance(spec.space, Space):
        return Stop("no trial finished, and the study's space is a function: --follow cannot change it")
    reasons = [t.user_attrs.get("prune_reason") or t.user_attrs.get("fail_reason") for t in trials]
    reasons = [r for r in reasons if r]
    why = (f"no trial finished: all {len(trials)} were pruned or failed"
           + (f" (the first reason: {reasons[0]})" if reasons else ""))
    remedy = _optimization(spec.space, [], tried.get("optimization", 0), why, below=True)
    return remedy if remedy is not None else Stop(why + "; the learning rate cannot go lower: fix the study file")


# --- the remedies, one per problem -------------------------------------------------------------
def _bias(space: Space, step: int, why: str) -> Remedy | None:
    """A more flexible model: deeper and wider nets. A second step, from the same study, widens
    again; capacity at the caps leaves "add features" (said by the diagnosis) to the user."""
    changes = {}
    depth, width = space.depth, space.width
    high = min(DEPTH_CAP, int(space.highest("depth")) + DEPTH_STEP)
    if high > space.highest("depth"):
        changes["depth"] = Int(int(space.lowest("depth")), high)
    high = min(WIDTH_CAP, max(int(space.highest("width")) * WIDTH_FACTOR, WIDTH_FLOOR) * WIDTH_FACTOR ** step)
    if high > space.highest("width"):
        changes["width"] = Int(int(space.lowest("width")), high, log=True)
    if step >= 1:  # the second time: the recipe's capacity where the study turned it off
        if _fixed_at(space.embedding, "none"):
            changes["embedding"] = Categorical(["none", "periodic"])  # the folds decide, as "auto" does
        elif space.off("ensemble"):
            changes["ensemble"] = ENSEMBLE_MEMBERS
    if not changes:
        return None
    before = {"depth": depth, "width": width, "embedding": space.embedding, "ensemble": space.ensemble}
    return Remedy("model bias", why, describe(before, changes), space=changes)


def _optimization(space: Space, trials, step: int, why: str, below: bool) -> Remedy | None:
    """The learning-rate range moved down, to where the deeper nets trained best, or, when the good
    learning rates lie below the range (`below`: the best trials crowd at its lowest end, or
    no net trains better than chance), below its lowest end; from the second step on (or when
    the range cannot go lower), warm-up and decay and gradient clipping."""
    changes: dict[str, Any] = {}
    lr = space.lr
    if step % 2 == 0 or not _schedule_off(space) or below:
        old_low = float(space.lowest("lr"))
        target = _deep_lr(trials, space)
        low = max(1e-6, old_low / LR_FACTOR)
        high = float(space.highest("lr"))
        if below:  # two decades under the old lowest end, and a little above it
            low = max(1e-6, old_low / LR_FACTOR ** 2)
            high = min(high, old_low * 3)
        else:  # the upper end comes down too (a third), and to 3x where the deeper nets trained best
            high = high / 3 if target is None else min(high / 3, max(target * 3, old_low))
        if low < float(space.lowest("lr")):
            changes["lr"] = Float(_round(low), _round(high), log=True)
    if not changes and _schedule_off(space):
        changes["schedule"] = "cosine"
        if space.off("grad_clip"):
            changes["grad_clip"] = 1.0
    if not changes:
        return None
    before = {name: getattr(space, name) for name in changes}
    before["lr"] = lr
    return Remedy("optimization", why, describe(before, changes), space=changes)


def _overfitting(space: Space, step: int, why: str, verdict) -> Remedy | None:
    """Stronger regularization: weight decay and dropout ranges raised, input noise searched;
    at the second step, an ensemble of members in every fold-model (where off); then a
    smaller model: one layer fewer and a quarter of the width at the top of their ranges."""
    changes: dict[str, Any] = {}
    if step >= 2 or (step == 1 and not space.off("ensemble")):
        depth_high = max(int(space.lowest("depth")), int(space.highest("depth")) - 1)
        if depth_high < space.highest("depth"):
            changes["depth"] = Int(int(space.lowest("depth")), depth_high)
        width_high = max(int(space.lowest("width")), int(space.highest("width")) // WIDTH_FACTOR)
        if width_high < space.highest("width"):
            changes["width"] = Int(int(space.lowest("width")), width_high, log=True)
    elif step == 0:
        wd_high = min(WEIGHT_DECAY_CAP, float(space.highest("weight_decay")) * WEIGHT_DECAY_FACTOR)
        if wd_high > float(space.highest("weight_decay")):
            changes["weight_decay"] = Float(float(space.lowest("weight_decay")), _round(wd_high), log=True)
        dropout_high = min(DROPOUT_CAP, float(space.highest("dropout")) + DROPOUT_STEP)
        if dropout_high > float(space.highest("dropout")) + 1e-9:
            changes["dropout"] = Float(float(space.lowest("dropout")), round(dropout_high, 3))
        if space.off("noise"):
            changes["noise"] = Float(*NOISE_RANGE)
    else:
        changes["ensemble"] = ENSEMBLE_MEMBERS
    if not changes:
        return None
    notes = tuple(e for e in verdict.evidence if "more data would help" in e)
    before = {name: getattr(space, name) for name in changes}
    return Remedy("overfitting", why, describe(before, changes), space=changes,
                  notes=(("more data would still help: the validation loss still falls with more rows",) if notes
                         else ()))



# --- evidence the remedies read ------------------------------------------------------------------
def _lr_at_bottom(space: Space, trials: list[FrozenTrial], top: int = 3) -> str | None:
    """The learning rates of the best trials, when most of them sit in the lowest tenth of the
    range (on its log scale): the range ends where the good learning rates begin."""
    lr = space.lr
    if not isinstance(lr, (Float, Int)) or lr.low == lr.high or not trials:
        return None
    best = sorted(trials, key=lambda t: t.value)[:top]
    rates = [float(t.params["lr"]) for t in best if "lr" in t.params]
    low, high = math.log(lr.low), math.log(lr.high)
    near = [r for r in rates if (math.log(r) - low) / (high - low) <= 0.1]
    if len(near) * 2 <= len(rates):
        return None
    return ", ".join(f"{r:.3g}" for r in rates) + f" against the range ({lr.low:g}, {lr.high:g})"


def _at_chance(trials: list[FrozenTrial], chance: float) -> float | None:
    """The nets' best training loss when it is no better than chance (within 5 %): a net
    that cannot even learn the class frequencies (or the mean) is not trained, whatever
    its size."""
    losses = [t.user_attrs["train_loss"] for t in trials if t.user_attrs.get("train_loss") is not None]
    best = min(losses, default=None)
    return best if best is not None and chance > 0 and best >= 0.95 * chance else None


def _deep_lr(trials: list[FrozenTrial], space: Space) -> float | None:
    """The learning rate of the trial with the lowest training loss among the deeper nets
    (those above the space's lowest depth): where depth trained."""
    shallowest = space.lowest("depth")
    deep = [t for t in trials if t.params.get("depth", shallowest) > shallowest and "lr" in t.params
            and t.user_attrs.get("train_loss") is not None] or \
        [t for t in trials if "lr" in t.params and t.user_attrs.get("train_loss") is not None]
    if not deep:
        return None
    return float(min(deep, key=lambda t: t.user_attrs["train_loss"]).params["lr"])


def _fixed_at(param, value) -> bool:
    return isinstance(param, Categorical) and list(param.choices) == [value]


def _schedule_off(space: Space) -> bool:
    return isinstance(space.schedule, Categorical) and list(space.schedule.choices) == ["constant"]


def _round(value: float) -> float:
    return float(f"{value:.3g}")


# --- words --------------------------------------------------------------------------------------
def describe(before: dict[str, Any], changes: dict[str, Any]) -> str:
    """"depth (1, 1) -> (1, 3); width (2, 4) -> (2, 64)"."""
    return "; ".join(f"{name} {show(before.get(name))} -> {show(value)}" for name, value in changes.items())


def show(value: Any) -> str:
    """A range or value as a study file writes it: (1, 3), 0.001, 'cosine', ['none', 'over']."""
    if isinstance(value, (Int, Float)):
        if value.low == value.high:
            return repr(value.low)
        return f"({value.low!r}, {value.high!r})"
    if isinstance(value, Categorical):
        return repr(value.choices[0]) if len(value.choices) == 1 else repr(list(value.choices))
    return repr(value)


def param_source(name: str, value: Any) -> str:
    """Python source for one Space field: a plain tuple where the field's own scale applies."""
    if isinstance(value, (Int, Float)) and value.low != value.high:
        if value.log == OPTIONS[name].log:
            return f"({value.low!r}, {value.high!r})"
        return f"{type(value).__name__}({value.low!r}, {value.high!r}, log={value.log!r})"
    return show(value)


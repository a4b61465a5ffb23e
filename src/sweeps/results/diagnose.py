"""What limits the model, with the numbers that show it.

The practical methodology (README, "Diagnosis") names four problems. A sweep already holds
the evidence for three of them (training and validation losses per fold, for many depths
and widths); baselines fitted on the same folds and a learning curve of the best
configuration complete it; the held-out evaluation adds the fourth:

- model bias: the nets' best training loss is not clearly below simple baselines';
- optimization: a deeper net reaches a higher training loss than a shallower one;
- overfitting: the validation loss of the best trials is far above their training loss;
- mismatch: the test loss is far outside the folds' spread, or a classifier can tell
  test rows from training rows (adversarial validation).

Every verdict states its numbers and the threshold it used (`Thresholds`, settable with
`--set`). Losses are compared on the scale of the chance-level loss (cross-entropy of
predicting the class frequencies; 1.0 for the standardized regression target), so one
threshold suits any task.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from sweeps.store import notes, record
from sweeps.results.baselines import chance_loss, fit_baselines
from sweeps.data.dataset import Dataset
from sweeps.errors import SweepsError
from sweeps.data.cache import cached_folds
from sweeps.data.folds import Folds, make_folds
from sweeps.data.preprocess import Preprocessing
from sweeps.sweep.trial import trial_seed
from sweeps.store.storage import load_existing_study
from sweeps.store.storage import attach, check_writable, describe, output_path, write_text_atomic
from sweeps.spec.params import Categorical
from sweeps.spec.space import Space
from sweeps.spec.study import Study
from sweeps.engine.config import NetConfig
from sweeps.engine.train import train_folds

LEARNING_CURVE_FRACTIONS = (0.25, 0.5, 0.75, 1.0)


@dataclass(frozen=True)
class Thresholds:
    """When a verdict says "yes". Gaps are fractions of the chance-level loss."""

    bias_margin: float = 0.2  # the nets' best training loss must be >= 20 % below the best baseline's
    optimization_gap: float = 0.05  # deeper-net training loss above a shallower one's by > 5 % of chance...
    optimization_sigma: float = 2.0  # ...and by more than 2 fold standard deviations
    overfit_gap: float = 0.08  # validation minus training loss of the best trial > 8 % of chance
    more_data_drop: float = 0.05  # validation loss falls > 5 % from 75 % to 100 % of rows: more data helps
    mismatch_sigma: float = 3.0  # test loss > CV mean + 3 fold standard deviations...
    mismatch_ratio: float = 1.25  # ...and > 1.25 x the CV mean
    adversarial_auc: float = 0.7  # a classifier tells test rows from training rows with AUC above this
    edge: float = 0.1  # a best value within 10 % of a range's end (on its scale) sits at the edge
    top_trials: int = 3  # trials whose curves are plotted

    def with_settings(self, settings: list[str]) -> Thresholds:
        """A copy with `NAME=VALUE` settings applied (the CLI's --set)."""
        changes = {}
        names = {f.name: f.type for f in dataclasses.fields(self)}
        for item in settings:
            name, _, value = item.partition("=")
            if name not in names or not value:
                raise SweepsError(f"--set {item!r}: expected NAME=VALUE with NAME one of {', '.join(names)}.")
            try:
                changes[name] = int(value) if name == "top_trials" else float(value)
            except ValueError:
                raise SweepsError(f"--set {item!r}: {value!r} is not a number.") from None
            if not math.isfinite(changes[name]) or changes[name] < (1 if name == "top_trials" else 0):
                raise SweepsError(f"--set {item!r}: must be a finite number >= "
                                  f"{1 if name == 'top_trials' else 0}, got {value!r}.")
        return dataclasses.replace(self, **changes)


@dataclass
class Verdict:
    problem: str
    status: str  # "yes", "no" or "not checked"
    summary: str
    evidence: list[str] = field(default_factory=list)
    threshold: str = ""
    remedies: list[str] = field(default_factory=list)
    hints: list[str] = field(default_factory=list)


@dataclass
class Diagnosis:
    study: str
    verdicts: list[Verdict]
    baselines: dict[str, dict[str, float]]
    learning_curve: list[dict[str, float]]
    by_depth: dict[int, dict[str, float]]
    chance: float
    thresholds: Thresholds
    report: str = ""
    path: Path | None = None  # where the report was written
    storage: str = ""  # the study's storage, for messages

    def verdict(self, problem: str) -> Verdict:
        return next(v for v in self.verdicts if v.problem == problem)

    @property
    def problems(self) -> list[str]:
        return [v.problem for v in self.verdicts if v.status == "yes"]


# --- evidence --------------------------------------------------------------------------------
def _complete(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if t.user_attrs.get("train_loss") is not None]
    return sorted(trials, key=lambda t: t.value)


def _best_by_depth(trials: list[optuna.trial.FrozenTrial]) -> dict[int, dict[str, float]]:
    """Per depth, the trial with the lowest training loss (what that depth can reach)."""
    groups: dict[int, dict[str, float]] = {}
    for t in trials:
        depth = int(t.params.get("depth", 0))
        loss = t.user_attrs["train_loss"]
        if depth not in groups or loss < groups[depth]["train_loss"]:
            groups[depth] = {"train_loss": loss, "train_loss_std": t.user_attrs.get("train_loss_std") or 0.0,
                             "trial": t.number, "n_trials": 0}
    for t in trials:
        groups[int(t.params.get("depth", 0))]["n_trials"] += 1
    return dict(sorted(groups.items()))


def _shallow_net(spec: Study, best: optuna.trial.FrozenTrial, folds: Folds) -> dict[str, float]:
    """The shallowest net of the space (other settings of the best trial), on the same folds."""
    depth = 1
    if isinstance(spec.space, Space):
        d = spec.space.depth
        depth = int(min(d.choices)) if isinstance(d, Categorical) else int(d.low)
    params = {**best.params, "depth": depth}
    config = NetConfig.from_params(params, spec.validation)  # scored as the trials were
    result = train_folds(folds, config, max_epochs=spec.max_epochs, patience=spec.patience,
                         seed=trial_seed(spec.seed, best.number))
    return {"train_loss": float(np.mean(result.train_losses)), "train_loss_std": float(np.std(result.train_losses)),
            "val_loss": result.cv_loss, "val_loss_std": float(np.std(result.val_losses)),
            "metric": float(np.mean(result.metrics)), "depth": depth}


def _learning_curve(spec: Study, dataset: Dataset, best: optuna.trial.FrozenTrial,
                    device: str, step: Callable[[str], None] = lambda _: None) -> list[dict[str, float]]:
    """The best configuration trained on growing parts of each fold's training rows."""
    points = []
    for fraction in LEARNING_CURVE_FRACTIONS:
        step(f"learning curve: the best configuration on {fraction:.0%} of the training rows")
        folds = make_folds(dataset, spec.folds, spec.seed, device, train_fraction=fraction,
                           scaling=spec.preprocessing)
        result = train_folds(folds, NetConfig.from_params(best.params, spec.validation),
                             max_epochs=spec.max_epochs, patience=spec.patience,
                             seed=trial_seed(spec.seed, best.number))
        points.append({"fraction": fraction, "train_rows": int(np.mean([len(r) for r in folds.train_rows])),
                       "train_loss": float(np.mean(result.train_losses)), "val_loss": result.cv_loss,
                       "val_loss_std": float(np.std(result.val_losses))})
    return points


def _edges(spec: Study, params: dict[str, Any], edge: float) -> dict[str, str]:
    """Parameters of `params` at the low or high end of their searched range ({name: 'top'|'bottom'})."""
    if not isinstance(spec.space, Space):
        return {}
    found = {}
    for name, value in params.items():
        param = getattr(spec.space, name, None)
        if param is None or isinstance(param, Categorical) or param.low == param.high:
            continue
        low, high, v = float(param.low), float(param.high), float(value)
        if param.log:
            low, high, v = math.log(low), math.log(high), math.log(v)
        position = (v - low) / (high - low)
        if position >= 1 - edge:
            found[name] = "top"
        elif position <= edge:
            found[name] = "bottom"
    return found


def adversarial_auc(dataset: Dataset, seed: int, max_rows: int = 20000) -> float:
    """Cross-validated AUC of a classifier telling held-out test rows from the others (0.5: alike)."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.metrics import roc_auc_score

    is_test = np.zeros(len(dataset.y), dtype=int)
    is_test[dataset.test] = 1
    rows = np.arange(len(is_test))
    if len(rows) > max_rows:
        rows = np.random.default_rng(seed).choice(rows, max_rows, replace=False)
    X = dataset.rows(rows)
    if dataset.is_table:  # unsupervised encoding of the features; no label is used
        X = Preprocessing.fit(X).features(X)
    forest = RandomForestClassifier(n_estimators=200, min_samples_leaf=3, random_state=seed, n_jobs=-1)
    scores = cross_val_predict(forest, X, is_test[rows], method="predict_proba",
                               cv=StratifiedKFold(5, shuffle=True, random_state=seed))[:, 1]
    return float(roc_auc_score(is_test[rows], scores))


# --- verdicts -------------------------------------------------------------------------------
def _bias(trials, baselines, chance, edges, th: Thresholds, k: int) -> Verdict:
    """Is the model family too weak? The nets' training loss against the simple baselines'.

    A baseline that also *validates* as well as the best net (within the folds' noise) while
    the nets fit the training rows at least as well as it does says something else: the nets
    add nothing over it, and more capacity will not help (the features carry no more); that
    is not bias, and widening depth and width is the wrong advice."""
    simple = {k_: v for k_, v in baselines.items() if not k_.startswith("shallowest")}
    base_name, base = min(simple.items(), key=lambda kv: kv[1]["train_loss"])
    best = min(trials, key=lambda t: t.user_attrs["train_loss"])
    net = best.user_attrs["train_loss"]
    limit = (1 - th.bias_margin) * base["train_loss"]
    evidence = [f"lowest training loss of the swept nets: {net:.4f} (trial #{best.number}, depth "
                f"{best.params.get('depth')}, width {best.params.get('width')})",
                f"lowest training loss of a simple baseline: {base['train_loss']:.4f} ({base_name})",
                f"chance-level loss: {chance:.4f}"]
    hints = [f"the best trial's {name} sits at the top of its range: widen the range upward"
             for name in ("depth", "width") if edges.get(name) == "top"]
    threshold = f"problem when the nets' training loss > (1 - {th.bias_margin:g}) x the baseline's = {limit:.4f}"
    # The fold noise of a difference of two k-fold means (standard error, folds taken as independent).
    valid_name, valid = min(simple.items(), key=lambda kv: kv[1]["val_loss"])
    top = min(trials, key=lambda t: t.value)
    val_noise = math.hypot(top.user_attrs.get("cv_loss_std") or 0.0, valid["val_loss_std"]) / math.sqrt(k)
    train_noise = math.hypot(best.user_attrs.get("train_loss_std") or 0.0, valid["train_loss_std"]) / math.sqrt(k)
    # Nets that fit the training rows worse than a baseline validating as well are too weak (or
    # badly trained): capacity does help then, and the rule below speaks.
    fit_as_well = net <= valid["train_loss"] + train_noise
    if fit_as_well and valid["val_loss"] <= top.value + val_noise:
        evidence.append(f"validation loss of the best net: {top.value:.4f} (trial #{top.number}); of "
                        f"{valid_name}: {valid['val_loss']:.4f}; fold noise of their difference {val_noise:.4f}")
        return Verdict("model bias", "no",
                       f"the nets add nothing over {valid_name}: it validates "
                       f"{'better than' if valid['val_loss'] < top.value - val_noise else 'as well as'} the best "
                       f"net ({valid['val_loss']:.4f} vs {top.value:.4f}; the folds' noise {val_noise:.4f}) "
                       "while the nets fit the training rows at least as closely; more capacity will not help.",
                       evidence, threshold + "; not bias when a baseline validates within the folds' noise of the "
                       "best net and the nets fit the training rows at least as well as it",
                       [f"the simpler model: {valid_name} is as good here, cheaper and easier to trust",
                        "add features, or more informative ones: the nets find nothing more in these"], hints)
    if net > limit:
        return Verdict("model bias", "yes",
                       f"the swept nets do not fit the training data clearly better than {base_name} "
                       f"({net:.4f} vs {base['train_loss']:.4f}): the model family is too weak.",
                       evidence, threshold,
                       ["widen the depth and width ranges (a more flexible model)",
                        "add features, or more informative ones",
                        "an ensemble of models"], hints)
    return Verdict("model bias", "no", f"the nets fit the training data {base['train_loss'] / max(net, 1e-12):.1f}x "
                   f"better than {base_name} ({net:.4f} vs {base['train_loss']:.4f}).", evidence, threshold, [], hints)


def _optimization(by_depth, chance, th: Thresholds) -> Verdict:
    threshold = (f"problem when a deeper net's best training loss exceeds a shallower one's by more than "
                 f"{th.optimization_gap:g} x chance = {th.optimization_gap * chance:.4f} and by more than "
                 f"{th.optimization_sigma:g} fold standard deviations")
    evidence = [f"depth {d}: best training loss {g['train_loss']:.4f} ± {g['train_loss_std']:.4f} "
                f"(trial #{g['trial']}, {g['n_trials']} trials)" for d, g in by_depth.items()]
    if len(by_depth) < 2:
        return Verdict("optimization", "not checked",
                       "all completed trials have the same depth; nothing to compare.", evidence, threshold)
    worst = None
    depths = list(by_depth)
    for i, shallow in enumerate(depths):
        for deep in depths[i + 1:]:
            a, b = by_depth[shallow], by_depth[deep]
            gap = b["train_loss"] - a["train_loss"]
            spread = max(a["train_loss_std"], b["train_loss_std"])
            if gap > th.optimization_gap * chance and gap > th.optimization_sigma * spread:
                if worst is None or gap > worst[2]:
                    worst = (shallow, deep, gap, spread)
    if worst:
        shallow, deep, gap, spread = worst
        return Verdict("optimization", "yes",
                       f"depth {deep} reaches a training loss {gap:.4f} higher than depth {shallow} "
                       f"({by_depth[deep]['train_loss']:.4f} vs {by_depth[shallow]['train_loss']:.4f}; fold spread "
                       f"{spread:.4f}). A deeper net could copy the shallower one, so this is not capacity: "
                       "gradient descent does not find the solution.",
                       evidence, threshold,
                       ["search lower learning rates (widen lr's range downward)",
                        "a learning-rate schedule (warm-up, decay)",
                        "another optimizer or initialisation; normalisation or residual connections for deep nets"])
    return Verdict("optimization", "no", "deeper nets reach training losses as low as shallower ones, within "
                   "the threshold.", evidence, threshold)


def _overfitting(best, curve, chance, edges, th: Thresholds) -> Verdict:
    train, val = best.user_attrs["train_loss"], best.value
    gap = val - train
    limit = th.overfit_gap * chance
    evidence = [f"best trial #{best.number}: training loss {train:.4f}, validation loss {val:.4f} "
                f"± {best.user_attrs.get('cv_loss_std') or 0:.4f}, gap {gap:.4f}"]
    evidence += [f"learning curve: {p['fraction']:.0%} of the training rows ({p['train_rows']}): validation "
                 f"{p['val_loss']:.4f}, training {p['train_loss']:.4f}" for p in curve]
    drop = (curve[-2]["val_loss"] - curve[-1]["val_loss"]) / max(curve[-1]["val_loss"], 1e-12)
    more_data = drop > th.more_data_drop
    evidence.append(f"validation loss from 75 % to 100 % of the rows: {-drop:+.1%}"
                    + (" (still falling: more data would help)" if more_data
                       else " (flat: more data alone helps little)"))
    hints = [f"the best trial's {name} sits at the top of its range: widen the range upward"
             for name in ("dropout", "weight_decay") if edges.get(name) == "top"]
    threshold = (f"problem when validation minus training loss > {th.overfit_gap:g} x chance = {limit:.4f}; "
                 f"more data helps when the validation loss still falls by > {th.more_data_drop:.0%}")
    if gap > limit:
        remedies = (["more training data (the learning curve is still falling)"] if more_data else []) + [
            "a constrained model: fewer layers or units, fewer features",
            "stronger weight decay (widen weight_decay's range upward)",
            "more dropout (widen dropout's range upward)",
            "earlier stopping (smaller patience)"]
        return Verdict("overfitting", "yes",
                       f"the best trial's validation loss is {gap:.4f} above its training loss "
                       f"({val:.4f} vs {train:.4f}): it fits the training rows far better than new rows.",
                       evidence, threshold, remedies, hints)
    return Verdict("overfitting", "no", f"validation loss exceeds training loss by {gap:.4f}, within the "
                   f"threshold {limit:.4f}.", evidence, threshold, [], hints)


def imbalance_hints(spec: Study, result: dict[str, Any]) -> list[str]:
    """Classification whose held-out balanced accuracy trails its accuracy: the smaller classes
    are recognised less often, and the space does not yet balance them."""
    accuracy, balanced = result.get("metric"), result.get("balanced_accuracy")
    if spec.task != "classification" or balanced is None or accuracy is None or accuracy - balanced < 0.05 \
            or spec.balanced_validation:  # already balanced (or searched balancing)
        return []
    return [f"the smaller classes are recognised less often (held-out balanced accuracy {balanced:.4f} vs "
            f"accuracy {accuracy:.4f}); if they matter, balance them: "
            'Space(class_weight=Categorical(["none", "balanced"]), resampling=Categorical(["none", "over", "under"]))']


def _mismatch(study: optuna.Study, dataset: Dataset, seed: int, th: Thresholds,
              spec: Study | None = None, step: Callable[[str], None] = lambda _: None,
              held_out: bool = True) -> Verdict:
    result = study.user_attrs.get("test_result")
    threshold = (f"problem when the test loss > CV mean + {th.mismatch_sigma:g} fold std and > "
                 f"{th.mismatch_ratio:g} x CV mean, or when adversarial validation AUC > {th.adversarial_auc:g}")
    if not held_out:
        return Verdict("mismatch", "not checked", "the held-out rows are not looked at here (--follow's rounds "
                       "use the development rows only); the final evaluation checks it once.", [], threshold)
    if not result:
        return Verdict("mismatch", "not checked", "the held-out test set has not been evaluated yet; run "
                       "python -m sweeps.evaluate STUDY_FILE, then diagnose again.", [], threshold)
    test, cv, std = result["loss"], result.get("cv_loss"), result.get("cv_loss_std")
    if std is None:  # an ensemble's out-of-fold loss is one number: the folds' spread is the trials'
        complete = _complete(study)
        std = (complete[0].user_attrs.get("cv_loss_std") if complete else None) or 0.0
    # Compared with the honest CV estimate where there is one: the plain CV loss chose each
    # fold's stopping epoch on the rows it scores, and that optimism is not a mismatch.
    honest = result.get("honest_cv_loss")
    reference, name = (honest, "honest CV loss") if honest is not None else (cv, "CV loss")
    step("adversarial validation: can a random forest tell test rows from the others?")
    auc = adversarial_auc(dataset, seed)
    evidence = [notes.final_model_line(result),
                f"test loss {test:.4f} vs {name} {reference:.4f} ± {std:.4f} over folds "
                f"({(test - reference) / std if std else float('inf'):+.1f} fold std, {test / reference:.2f}x)"
                + (f"; the plain CV loss, {cv:.4f}, is {honest - cv:.4f} optimistic" if honest is not None else ""),
                f"adversarial validation: a random forest tells test rows from the others with AUC {auc:.3f} "
                "(0.5: indistinguishable)"]
    cv = reference
    hints = imbalance_hints(spec, result) if spec is not None else []
    far = test > cv + th.mismatch_sigma * std and test > th.mismatch_ratio * cv
    separable = auc > th.adversarial_auc
    remedies = ["data augmentation that covers the test conditions",
                "transfer learning on data like the test data: Study(init_from=a model saved by evaluate), "
                "fine-tuning every layer or, with Space(freeze=(0, its depth)), keeping the first ones",
                "re-sampling (over- or under-sampling) so training looks like the test distribution"
                + (': Space(resampling=Categorical(["none", "over", "under"])) balances the classes'
                   if dataset.classes is not None else ""),
                "domain adaptation: Study(target_data=unlabeled rows like the test rows) with "
                "Space(importance=\"density_ratio\") weighs the training rows that look like them more, or with "
                "Space(adversarial=Float(0.01, 1.0, log=True)) trains features a domain classifier cannot tell "
                "from theirs (DANN)",
                "monitor performance per data source: Study(groups=its column, or an array), and "
                "early_stopping=\"worst_group\" to stop and choose on the worst source"]
    if far or separable:
        why = " and ".join(s for s, on in ((f"the test loss is far outside the folds' spread ({test:.4f} vs "
                                             f"{cv:.4f} ± {std:.4f})", far),
                                            (f"test rows are distinguishable from training rows (AUC {auc:.3f})",
                                             separable)) if on)
        return Verdict("mismatch", "yes", f"{why}: training and test data come from different distributions.",
                       evidence, threshold, remedies, hints)
    return Verdict("mismatch", "no", "the test loss is within the folds' spread and test rows look like "
                   "training rows.", evidence, threshold, [], hints)


def mismatch_verdict(study: optuna.Study, dataset: Dataset, spec: Study,
                     thresholds: Thresholds = Thresholds()) -> Verdict:
    """Mismatch alone, for a study already scored on its held-out rows (--follow's end): its
    test loss against the honest CV estimate, and adversarial validation."""
    return _mismatch(study, dataset, spec.seed, thresholds, spec)


# --- the whole diagnosis ---------------------------------------------------------------------
class _Steps:
    """Tells `progress` each step as it starts: "[2/7] ... (3.1 s so far)"."""

    def __init__(self, progress: Callable[[str], None] | None, total: int):
        self.progress, self.total, self.done = progress, total, 0
        self.started = time.perf_counter()

    def __call__(self, what: str) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(f"[{self.done}/{self.total}] {what} ({time.perf_counter() - self.started:.1f} s so far)")



def diagnose_study(spec: Study, dataset: Dataset, *, storage: str | None = None,
                   thresholds: Thresholds = Thresholds(), device: str = "cpu",
                   output: str | None = None, progress: Callable[[str], None] | None = None,
                   held_out: bool = True) -> Diagnosis:
    """Diagnose a stored study; save the report as Markdown, attach it to the study, and return
    the diagnosis (its `report`, and the `path` it was written to). `progress` is told each
    step as it starts, numbered, with the seconds spent so far (the command prints them).
    `held_out=False`: the development rows only; mismatch, which needs the held-out rows
    (their score, and adversarial validation on their features), is "not checked"."""
    study, url = load_existing_study(spec.name, storage)
    dataset = record.check_same_study(study, spec, dataset, describe(url))
    spec = spec.replace(preprocessing=record.stored_settings(study)["preprocessing"])  # as the trials had it
    path = Path(output) if output else output_path(url, spec.name, "-diagnosis.md")
    check_writable(path, "diagnosis report")
    trials = _complete(study)
    if not trials:
        raise SweepsError(f"study '{spec.name}' has no completed trial yet; run the sweep first.")
    best = trials[0]
    scored = held_out and bool(study.user_attrs.get("test_result"))
    step = _Steps(progress, 2 + len(LEARNING_CURVE_FRACTIONS) + scored)
    folds = cached_folds(dataset, spec.folds, spec.seed, device, scaling=spec.preprocessing)

    scale = "class-balanced" if spec.balanced_validation else "plain"  # the trials' loss, and so the baselines'
    baselines = study.user_attrs.get("baselines") if study.user_attrs.get("baselines_scale", "plain") == scale \
        else None
    step("baselines on the same folds: " + ("fitting them" if not baselines else "stored, reused"))
    if not baselines:  # fitted once per study (and scale), then reused
        baselines = fit_baselines(folds, spec.seed, balanced=spec.balanced_validation)
        step("the shallowest net of the space, with the best trial's other settings")
        shallow = _shallow_net(spec, best, folds)
        baselines[f"shallowest net (depth {shallow.pop('depth')})"] = shallow
        record.write_baselines(study, baselines, scale)
    else:
        step("the shallowest net: stored, reused")
    chance = chance_loss(folds, balanced=spec.balanced_validation)
    curve = _learning_curve(spec, dataset, best, device, step)
    by_depth = _best_by_depth(trials)
    edges = _edges(spec, best.params, thresholds.edge)

    verdicts = [_bias(trials, baselines, chance, edges, thresholds, spec.folds),
                _optimization(by_depth, chance, thresholds),
                _overfitting(best, curve, chance, edges, thresholds),
                _mismatch(study, dataset, spec.seed, thresholds, spec, step, held_out)]
    diagnosis = Diagnosis(spec.name, verdicts, baselines, curve, by_depth, chance, thresholds)
    diagnosis.report = markdown(diagnosis, study, best)

    write_text_atomic(path, diagnosis.report)
    attach(study, path, url)
    diagnosis.path, diagnosis.storage = path, describe(url)
    record.write_diagnosis(study, curve, {
        "problems": diagnosis.problems,
        "verdicts": {v.problem: {"status": v.status, "summary": v.summary} for v in verdicts},
        "thresholds": dataclasses.asdict(thresholds),
        "report_path": str(path),
    }, diagnosis.report)
    _save_plots(study, trials[: thresholds.top_trials], by_depth, baselines, curve)
    notes.refresh(study)
    return diagnosis


def markdown(d: Diagnosis, study: optuna.Study, best: optuna.trial.FrozenTrial) -> str:
    n = {s: len(study.get_trials(deepcopy=False, states=(s,))) for s in (TrialState.COMPLETE, TrialState.PRUNED)}
    lines = [f"# Diagnosis of study '{d.study}'", "",
             f"{n[TrialState.COMPLETE]} complete and {n[TrialState.PRUNED]} pruned trials. Losses are "
             f"validation/training losses of the k-fold CV; chance level is {d.chance:.4f}.", "",
             "| problem | verdict | in short |", "|---|---|---|"]
    for v in d.verdicts:
        mark = {"yes": "**yes**", "no": "no", "not checked": "not checked"}[v.status]
        lines.append(f"| {v.problem} | {mark} | {v.summary} |")
    if not d.problems:
        lines += ["", "No problem found among those checked."]
    lines += ["", "## Baselines on the same folds", "",
              "| model | training loss | validation loss | metric |", "|---|---|---|---|",
              f"| best trial #{best.number} ({_params(best.params)}) | {best.user_attrs['train_loss']:.4f} ± "
              f"{best.user_attrs.get('train_loss_std') or 0:.4f} | {best.value:.4f} ± "
              f"{best.user_attrs.get('cv_loss_std') or 0:.4f} | {best.user_attrs.get('metric', float('nan')):.4f} |"]
    for name, b in d.baselines.items():
        lines.append(f"| {name} | {b['train_loss']:.4f} ± {b['train_loss_std']:.4f} | {b['val_loss']:.4f} ± "
                     f"{b['val_loss_std']:.4f} | {b['metric']:.4f} |")
    attrs = best.user_attrs
    if "group_val_loss" in attrs:  # Study(groups=): the best trial, per source
        task = "classification" if attrs.get("metric_name") == "accuracy" else "regression"
        lines += ["", f"## Per group: the best trial's worst is '{attrs['worst_group']}'",
                  *notes.group_lines(attrs, task),
                  "", f"The worst group's validation loss is {attrs['group_val_loss'][attrs['worst_group']]:.4f}, "
                  f"{attrs['group_spread']:.4f} above the best group's. The CV loss varies by "
                  f"{attrs.get('cv_loss_std') or 0:.4f} (std) between folds: a spread well above that "
                  "means one source is served worse."]
    for v in d.verdicts:
        lines += ["", f"## {v.problem.capitalize()}: {v.status}", "", v.summary[0].upper() + v.summary[1:], ""]
        lines += [f"- {e}" for e in v.evidence]
        if v.threshold:
            lines += ["", f"Threshold: {v.threshold}."]
        if v.remedies:
            lines += ["", "Try next:"] + [f"{i}. {r}" for i, r in enumerate(v.remedies, 1)]
        if v.hints:
            lines += ["", "Also:"] + [f"- {h}" for h in v.hints]
    return "\n".join(lines) + "\n"


def _params(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())


def _save_plots(study, top, by_depth, baselines, curve) -> None:
    import plotly.graph_objects as go
    from optuna_dashboard import save_plotly_graph_object

    curves = go.Figure()
    for t in top:
        epochs = list(range(1, len(t.user_attrs.get("curve_val", [])) + 1))
        curves.add_scatter(x=epochs, y=t.user_attrs.get("curve_val"), name=f"#{t.number} validation")
        curves.add_scatter(x=epochs, y=t.user_attrs.get("curve_train"), name=f"#{t.number} training",
                           line={"dash": "dash"})
    curves.update_layout(title="Per-epoch mean loss over folds, best trials", xaxis_title="epoch",
                         yaxis_title="loss")
    save_plotly_graph_object(study, curves, graph_object_id="sweeps-curves")

    depth = go.Figure()
    depth.add_bar(x=[str(d) for d in by_depth], y=[g["train_loss"] for g in by_depth.values()],
                  error_y={"type": "data", "array": [g["train_loss_std"] for g in by_depth.values()]},
                  name="best training loss")
    for name, b in baselines.items():
        depth.add_hline(y=b["train_loss"], line_dash="dot", annotation_text=name)
    depth.update_layout(title="Best training loss by depth (dotted: baselines)", xaxis_title="depth",
                        yaxis_title="training loss")
    save_plotly_graph_object(study, depth, graph_object_id="sweeps-depth")

    learning = go.Figure()
    rows = [p["train_rows"] for p in curve]
    learning.add_scatter(x=rows, y=[p["val_loss"] for p in curve], name="validation",
                         error_y={"type": "data", "array": [p["val_loss_std"] for p in curve]})
    learning.add_scatter(x=rows, y=[p["train_loss"] for p in curve], name="training", line={"dash": "dash"})
    learning.update_layout(title="Learning curve of the best configuration", xaxis_title="training rows per fold",
                           yaxis_title="loss")
    save_plotly_graph_object(study, learning, graph_object_id="sweeps-learning-curve")

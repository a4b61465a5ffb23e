"""How good is the model a sweep finds? Against gradient boosting with default parameters, same rows.

    python benchmarks/bench_quality.py [--datasets adult,mpls_stops,california,wine_red,wine_white,mammography]
                                       [--seeds 0,1,2] [--trials 25] [--variants recipe,...]
                                       [--json results.json]

For each dataset and seed: a `--trials`-trial sweep of the study template (`study()`
below: every dataset gets the same search ranges, those of the shipped studies/adult.py,
and the recipe's defaults, i.e. what a study file gets when it names no ingredient; the
budget follows one rule of data size, as in the shipped studies), then `evaluate` of the
declared final model on the held-out rows; LightGBM tuned with the same budget (`tuned_lightgbm`:
25 TPE trials, 5-fold CV on the same rows, refit), LightGBM (`LGBMClassifier/Regressor(verbose=-1)`, optional:
`pip install -e ".[bench]"`) and scikit-learn's `HistGradientBoosting*` with default
parameters are fitted on the same non-test rows and scored on the same test rows
(categorical columns as pandas `category`). Adult's held-out rows are its official test
split; the others hold out a seeded, stratified 20 %, which the seed changes. `mpls_stops`
is the all-categorical table (every column text; not one of the five of the targets).

Variants change one ingredient of the template at a time (the ablation): e.g.
`no-embedding` turns the periodic embeddings off. `final-models` evaluates every final-model
strategy (folds, refit, refit-seeds, ensemble; `final-models:folds+ensemble` some of them) on
the same sweep of each seed: the strategies differ
only after the sweep, and the benchmark may use the test rows more than once, which a
study never should. Medians over seeds are printed as a
Markdown table with the sweep's wall time beside each row, and its time to quality: when
its best CV loss first reached the final best CV loss of the plain sequential sweep (the
first variant, same seed).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
from sklearn.metrics import accuracy_score, mean_squared_error, r2_score, roc_auc_score

from sweeps import Space, Study, Table
from sweeps._cli import quiet_optuna
from sweeps.data.dataset import load_dataset
from sweeps.results.evaluate import evaluate_study
from sweeps.spec.options import FINAL_MODELS
from sweeps.sweep.optimize import run_study

DATA = Path(__file__).resolve().parent.parent / "studies" / "data"
ADULT = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
         "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country", "income"]
WINE = ["fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides", "free sulfur dioxide",
        "total sulfur dioxide", "density", "pH", "sulphates", "alcohol", "quality"]


def adult_test():
    X, y = Table(DATA / "adult-test.csv.gz", target="income", columns=ADULT)()
    return X, y.str.rstrip(".")


def california():
    X, y = Table(DATA / "california_housing.csv.gz", target="median_house_value")()
    return X, y / 1e5  # in units of $100,000, as scikit-learn's copy and the papers' tables


# name: (task, data, test_data, metric)
DATASETS = {
    "adult": ("classification", Table(DATA / "adult-train.csv.gz", target="income", columns=ADULT), adult_test,
              "accuracy"),
    "california": ("regression", california, None, "r2"),
    "wine_red": ("regression", Table(DATA / "winequality-red.csv.gz", target="quality", columns=WINE), None, "rmse"),
    "wine_white": ("regression", Table(DATA / "winequality-white.csv.gz", target="quality", columns=WINE), None,
                   "rmse"),
    "mammography": ("classification", Table(DATA / "mammography.csv.gz", target="class",
                                            columns=[f"x{i}" for i in range(1, 7)] + ["class"]), None, "roc_auc"),
    # every column categorical (one of 87 levels at most); not among the five of the targets
    "mpls_stops": ("classification", Table(DATA / "mpls-stops.csv.gz", target="personSearch"), None, "roc_auc"),
}

# One ingredient changed at a time. Space options go to Space, the rest to Study.
VARIANTS = {
    "recipe": {},
    "candidate": dict(embedding="periodic", frequency_scale=(0.01, 30.0), beta2=0.95, preprocessing="quantile",
                      final_model="folds"),
    "candidate-small": dict(embedding="periodic", frequency_scale=(0.01, 30.0), n_frequencies=16, embedding_dim=16,
                            beta2=0.95, preprocessing="quantile", final_model="folds"),
    "plain": dict(embedding="none", preprocessing="standard", beta2=0.999, schedule="constant",
                  label_smoothing=0.0, final_model="refit", ensemble=1),
    "no-embedding": dict(embedding="none"),
    # the periodic embeddings' size: the default (16 x 16), and a cheaper one
    "periodic-16x16": dict(embedding="periodic", n_frequencies=16, embedding_dim=16),
    "periodic-8x4": dict(embedding="periodic", n_frequencies=8, embedding_dim=4),
    "standard-scaling": dict(preprocessing="standard"),
    "robust-scaling": dict(preprocessing="robust"),
    "quantile-scaling": dict(preprocessing="quantile"),
    "beta2-0.999": dict(beta2=0.999),
    "constant-lr": dict(schedule="constant"),
    "cosine-lr": dict(schedule="cosine"),
    "no-smoothing": dict(label_smoothing=0.0),
    "smoothing-0.1": dict(label_smoothing=0.1),
    "clip-1": dict(grad_clip=1.0),
    "refit": dict(final_model="refit"),
    "refit-seeds": dict(final_model="refit-seeds"),
    "folds": dict(final_model="folds"),
    "E4": dict(ensemble=4),
    "E8": dict(ensemble=8),
    "E16": dict(ensemble=16),
    "E32": dict(ensemble=32),
    "ensemble": dict(final_model="ensemble"),
    "no-candidates": dict(candidates=0),
    "category-8": dict(category_dim=8),
    "category-16": dict(category_dim=16),
    # the regression ablation's variants keep the final model of its baseline, the folds
    "huber-1": dict(huber=1.0, final_model="folds"),
    # the budget rule's epochs and patience, both doubled (the Study fields, not the Space)
    "budget-2x": dict(budget=2, final_model="folds"),
    # regression: the target mapped to a normal distribution by quantiles fitted on the non-test
    # rows (scikit-learn's QuantileTransformer), swept and trained there; the held-out rows are
    # scored in the target's own units, the predictions mapped back
    "target-quantile": dict(target="quantile", final_model="folds"),
}
STUDY_FIELDS = {"preprocessing", "final_model", "candidates"}
BENCH_FIELDS = {"budget", "target"}  # handled by the benchmark itself (below), not by the Study


RANGES = dict(depth=(1, 3), width=(16, 256), dropout=(0.0, 0.5), weight_decay=(1e-6, 1e-2), lr=(3e-4, 1e-2))
LARGE = 10_000  # rows: above, batches of 256 and 30 epochs (patience 4); below, 64 and 100 (patience 10)


def study(name: str, seed: int, trials: int, variant: dict) -> Study:
    """The same template for every dataset: ranges, budget rule, defaults, one change of the variant."""
    task, data, test_data, _ = DATASETS[name]
    rows = len(data()[1])
    large = rows > LARGE
    space_changes = {k: v for k, v in variant.items() if k not in STUDY_FIELDS | BENCH_FIELDS}
    study_changes = {k: v for k, v in variant.items() if k in STUDY_FIELDS}
    space = Space(**RANGES, batch_size=256 if large else 64, **space_changes)
    budget = variant.get("budget", 1)
    spec = Study(name=name, task=task, data=data, test_data=test_data, space=space, n_trials=trials, seed=seed,
                 max_epochs=(30 if large else 100) * budget, patience=(4 if large else 10) * budget, **study_changes)
    if variant.get("target") == "quantile":
        spec = quantile_target(spec)
    return spec


class QuantileTarget:
    """The study's data with y mapped to a normal distribution by quantiles of the non-test rows
    (a loader: a Study's data must be a callable or a pair). `inverse` maps predictions back."""

    def __init__(self, spec: Study):
        from sklearn.preprocessing import QuantileTransformer

        self.data = spec.data
        dataset = load_dataset(spec)
        self.test = dataset.test
        y_dev = dataset.y[dataset.dev].reshape(-1, 1)
        self.transformer = QuantileTransformer(output_distribution="normal", n_quantiles=min(1000, len(y_dev)),
                                               random_state=0).fit(y_dev)

    def __call__(self):
        X, y = self.data() if callable(self.data) else self.data
        return X, pd.Series(self.transformer.transform(pd.Series(y).to_numpy().reshape(-1, 1))[:, 0])

    def inverse(self, values):
        return self.transformer.inverse_transform(values.reshape(-1, 1))[:, 0]


def quantile_target(spec: Study) -> Study:
    loader = QuantileTarget(spec)
    transformed = spec.replace(data=loader)
    assert (load_dataset(transformed).test == loader.test).all(), "the held-out rows must not move"
    return transformed


def gbdt_rows(spec: Study):
    """The study's non-test and held-out rows as gradient boosting takes them (text as `category`)."""
    dataset = load_dataset(spec)
    X = (dataset.X if dataset.is_table else pd.DataFrame(dataset.X)).copy()
    for column in X.columns:
        if not pd.api.types.is_numeric_dtype(X[column]):
            X[column] = X[column].astype("category")
    return X.iloc[dataset.dev], X.iloc[dataset.test], dataset.y[dataset.dev], dataset.y[dataset.test]


def gradient_boosting(spec: Study) -> dict[str, dict[str, float]]:
    """LightGBM and HistGradientBoosting with default parameters on the study's own rows."""
    from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

    X_dev, X_test, y_dev, y_test = gbdt_rows(spec)
    classification = spec.task == "classification"
    models = {"HistGB": (HistGradientBoostingClassifier if classification else HistGradientBoostingRegressor)(
        random_state=0, categorical_features="from_dtype")}
    try:
        import lightgbm

        models["LightGBM"] = (lightgbm.LGBMClassifier if classification else lightgbm.LGBMRegressor)(
            verbose=-1, random_state=0)
    except ImportError:
        pass
    scores = {}
    for name, model in models.items():
        started = time.perf_counter()
        model.fit(X_dev, y_dev)
        scores[name] = held_out_scores(model, X_test, y_test, classification, time.perf_counter() - started)
    return scores


def held_out_scores(model, X_test, y_test, classification: bool, seconds: float) -> dict[str, float]:
    """A fitted scikit-learn-style model's scores on the held-out rows, and the seconds it took."""
    if classification:
        p = model.predict_proba(X_test)
        result = {"accuracy": accuracy_score(y_test, p.argmax(1)), "seconds": seconds}
        if p.shape[1] == 2:
            result["roc_auc"] = roc_auc_score(y_test, p[:, 1])
        return result
    pred = model.predict(X_test)
    return {"rmse": mean_squared_error(y_test, pred) ** 0.5, "r2": r2_score(y_test, pred), "seconds": seconds}


def tuned_lightgbm(spec: Study, trials: int) -> dict[str, float]:
    """LightGBM tuned as a user tunes it, with the sweep's budget: `trials` TPE trials (seeded
    by the study's seed) scored by 5-fold CV on the same non-test rows (log loss, or MSE),
    then refitted on all of them and scored once on the held-out rows."""
    import lightgbm
    import optuna
    from sklearn.model_selection import KFold, StratifiedKFold, cross_val_score

    X_dev, X_test, y_dev, y_test = gbdt_rows(spec)
    classification = spec.task == "classification"
    Model = lightgbm.LGBMClassifier if classification else lightgbm.LGBMRegressor
    cv = (StratifiedKFold if classification else KFold)(5, shuffle=True, random_state=spec.seed)
    scoring = "neg_log_loss" if classification else "neg_mean_squared_error"

    def params(trial: optuna.Trial) -> dict:
        return dict(n_estimators=trial.suggest_int("n_estimators", 50, 1000, log=True),
                    learning_rate=trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
                    num_leaves=trial.suggest_int("num_leaves", 8, 256, log=True),
                    min_child_samples=trial.suggest_int("min_child_samples", 5, 100, log=True),
                    subsample=trial.suggest_float("subsample", 0.5, 1.0), subsample_freq=1,
                    colsample_bytree=trial.suggest_float("colsample_bytree", 0.5, 1.0),
                    reg_lambda=trial.suggest_float("reg_lambda", 1e-8, 10.0, log=True))

    def objective(trial: optuna.Trial) -> float:
        model = Model(verbose=-1, random_state=spec.seed, **params(trial))
        return -cross_val_score(model, X_dev, y_dev, cv=cv, scoring=scoring).mean()

    started = time.perf_counter()
    tuner = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=spec.seed))
    tuner.optimize(objective, n_trials=trials)
    model = Model(verbose=-1, random_state=spec.seed, **params(optuna.trial.FixedTrial(tuner.best_params)))
    model.fit(X_dev, y_dev)
    return held_out_scores(model, X_test, y_test, classification, time.perf_counter() - started)


def sweep(spec: Study, final_models: tuple[str, ...] = ()) -> dict[str, float] | list[dict[str, float]]:
    """One sweep and the evaluation of its declared final model; with `final_models`, one
    evaluation per strategy of the *same* sweep (a list of results, in that order)."""
    with tempfile.TemporaryDirectory() as folder:
        url = f"sqlite:///{folder}/{spec.name}.db"
        dataset = load_dataset(spec)
        started = time.perf_counter()
        study_ = run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
        sweep_seconds = time.perf_counter() - started
        path = best_so_far(study_.trials, started_at=time.time() - sweep_seconds)
        results = []
        for final_model in final_models or (spec.final_model,):
            started = time.perf_counter()
            entry, model = evaluate_study(spec.replace(final_model=final_model), dataset, storage=url,
                                          model_path=f"{folder}/model.pt", err=io.StringIO())
            evaluate_seconds = time.perf_counter() - started
            result = {"loss": entry["loss"], "cv_loss": entry["cv_loss"], "sweep_seconds": sweep_seconds,
                      "evaluate_seconds": evaluate_seconds, "model_bytes": Path(f"{folder}/model.pt").stat().st_size,
                      "pruned": sum(t.state.name == "PRUNED" for t in study_.trials),
                      "params": entry["params"], "members": entry["members"], "final_model": final_model,
                      "best_so_far": path}
            if spec.task == "classification":
                result["accuracy"] = entry["metric"]
                result.update({k: entry[k] for k in ("roc_auc", "balanced_accuracy", "macro_f1") if k in entry})
            else:
                result.update(regression_scores(spec, dataset, model))
            results.append(result)
    return results if final_models else results[0]


def best_so_far(trials: list, started_at: float) -> list[tuple[float, float]]:
    """(seconds since the sweep started, the best CV loss so far) at each finished trial that improved it."""
    done = sorted((t for t in trials if t.state.name == "COMPLETE" and t.value is not None),
                  key=lambda t: t.datetime_complete)
    path, best = [], float("inf")
    for t in done:
        if t.value < best:
            best = t.value
            path.append((round(t.datetime_complete.timestamp() - started_at, 2), best))
    return path


def time_to(path: list, target: float) -> float | None:
    """When the best CV loss first reached `target` (None: never)."""
    return next((seconds for seconds, best in path if best <= target), None)


def regression_scores(spec: Study, dataset, model) -> dict[str, float]:
    """RMSE and R² on the held-out rows in the target's own units (mapped back from a
    transformed target), and the same with the predictions clipped to the range of the
    non-test rows' targets (as RealMLP clips its outputs), from the same model."""
    X_test = dataset.X.iloc[dataset.test] if dataset.is_table else dataset.X[dataset.test]
    pred, y_dev, y_test = model.predict(X_test), dataset.y[dataset.dev], dataset.y[dataset.test]
    if isinstance(spec.data, QuantileTarget):
        pred, y_dev, y_test = (spec.data.inverse(v) for v in (pred, y_dev, y_test))
    clipped = pred.clip(y_dev.min(), y_dev.max())
    return {"rmse": mean_squared_error(y_test, pred) ** 0.5, "r2": r2_score(y_test, pred),
            "rmse_clipped": mean_squared_error(y_test, clipped) ** 0.5, "r2_clipped": r2_score(y_test, clipped)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default=",".join(DATASETS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--trials", type=int, default=25)
    p.add_argument("--variants", default="recipe")
    p.add_argument("--no-gbdt", action="store_true", help="skip the gradient-boosting references")
    p.add_argument("--json", help="append every result as a JSON line to this file")
    args = p.parse_args()
    quiet_optuna()
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []

    def keep(result: dict) -> None:
        print(json.dumps(result), file=sys.stderr, flush=True)
        if args.json:
            with open(args.json, "a") as f:
                f.write(json.dumps(result) + "\n")

    for name in args.datasets.split(","):
        metric = DATASETS[name][3]
        for variant in args.variants.split(","):
            if variant.startswith("final-models"):  # strategies evaluated on the same sweep of each seed
                strategies = tuple(variant.split(":")[1].split("+")) if ":" in variant else FINAL_MODELS
                by_strategy: dict[str, list] = {}
                for seed in seeds:
                    spec = study(name, seed, args.trials, {})
                    gbdt = None if args.no_gbdt else gradient_boosting(spec)
                    if gbdt and "LightGBM" in gbdt:
                        gbdt["LightGBM tuned"] = tuned_lightgbm(spec, args.trials)
                    for result in sweep(spec, strategies):
                        if gbdt:
                            result["gbdt"] = gbdt
                        result.update(dataset=name, variant=f"final_model={result['final_model']}", seed=seed)
                        by_strategy.setdefault(result["variant"], []).append(result)
                        keep(result)
                rows += [(name, v, metric, results) for v, results in by_strategy.items()]
                continue
            results = []
            for seed in seeds:
                spec = study(name, seed, args.trials, VARIANTS[variant])
                result = sweep(spec)
                if not args.no_gbdt and variant == args.variants.split(",")[0]:
                    result["gbdt"] = gradient_boosting(spec)
                    if "LightGBM" in result["gbdt"]:
                        result["gbdt"]["LightGBM tuned"] = tuned_lightgbm(spec, args.trials)
                result.update(dataset=name, variant=variant, seed=seed)
                results.append(result)
                keep(result)
            rows.append((name, variant, metric, results))
    print(f"\n{args.trials} trials per sweep; medians over seeds {args.seeds}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| dataset | variant | metric | sweeps | LightGBM tuned | LightGBM default | HistGB default "
          "| sweep + evaluate | LightGBM tuned: time | reached the plain sweep's final CV loss at | model file "
          "| per seed |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    # The yardstick of time to quality: the final best CV loss of each dataset's first variant
    # (the plain sequential sweep: the recipe as a study file gets it), seed by seed.
    yardstick = {}
    for name, variant, metric, results in rows:
        for r in results:
            yardstick.setdefault((name, r["seed"]), r["best_so_far"][-1][1] if r.get("best_so_far") else None)
    for name, variant, metric, results in rows:
        ours = statistics.median(r[metric] for r in results)
        gbdt = {m: statistics.median(r["gbdt"][m][metric] for r in results)
                for m in ("LightGBM tuned", "LightGBM", "HistGB") if all("gbdt" in r and m in r["gbdt"] for r in results)}
        tuned_seconds = statistics.median(r["gbdt"]["LightGBM tuned"]["seconds"] for r in results) \
            if "LightGBM tuned" in gbdt else float("nan")
        seconds = statistics.median(r["sweep_seconds"] + r["evaluate_seconds"] for r in results)
        per_seed = " / ".join(f"{r[metric]:.4f}" for r in results)
        size = statistics.median(r["model_bytes"] for r in results) / 1024
        reached = [time_to(r.get("best_so_far") or [], yardstick[(name, r["seed"])]) for r in results
                   if yardstick.get((name, r["seed"])) is not None]
        when = (f"{statistics.median(t if t is not None else float('inf') for t in reached):.0f} s "
                f"({sum(t is not None for t in reached)}/{len(reached)} seeds)") if reached else "-"
        print(f"| {name} | {variant} | {metric} | **{ours:.4f}** | {gbdt.get('LightGBM tuned', float('nan')):.4f} | "
              f"{gbdt.get('LightGBM', float('nan')):.4f} | {gbdt.get('HistGB', float('nan')):.4f} | {seconds:.0f} s | "
              f"{tuned_seconds:.0f} s | {when} | {size:.0f} KiB | {per_seed} |")


if __name__ == "__main__":
    main()

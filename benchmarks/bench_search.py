"""Pruning and stopping: how soon a sweep reaches a good configuration, and when it is done.

    python benchmarks/bench_search.py [--seeds 0,1,2,3,4] [--trials 50] [--datasets digits,wine_red]
                                      [--variants median,successive-halving,...] [--converged]
                                      [--json results.jsonl]

A dataset is a shipped study (`studies/<name>.py`, its trials and seed replaced) or, for a
name that is not one, bench_quality's template on that table. For each dataset and seed,
sweeps of the same study and seed that differ only in the pruner (`--variants`, default all):
none, MedianPruner (the default), FoldPairedPruner, both (AnyPruner), Optuna's
SuccessiveHalvingPruner and HyperbandPruner with their own defaults (their resource is the
epoch: every fold trains at every epoch, so epochs x folds grow together), and successive
halving whose first rung is the median pruner's warm-up (5 epochs), alone and after 5
complete trials (`AfterStartup`: sweeps' default). The yardstick is the
MedianPruner sweep's final best CV loss: for each
variant, the wall time (from its first trial's start) at which its best CV loss came within
one fold standard error of that yardstick (the best trial's fold std / sqrt(k)), and the
fold-epochs it trained in all. Medians over seeds, as ratios to MedianPruner's time to the
same point, printed as a Markdown table.

`--converged`: digits with `stop="converged"` and a cap of 200 trials, against a plain
200-trial run of the same seed: the number of trials the stop ran, and whether its best is
within one standard error of the 200-trial run's best.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import study as quality_study  # noqa: E402

from sweeps import Study  # noqa: E402
from sweeps._cli import quiet_optuna  # noqa: E402
from sweeps.data.dataset import load_dataset  # noqa: E402
from sweeps.sweep.pruners import AfterStartup, AnyPruner, FoldPairedPruner  # noqa: E402
from sweeps.spec.study import load_study_file  # noqa: E402
from sweeps.sweep.optimize import run_study  # noqa: E402


def pruners(spec: Study) -> dict[str, optuna.pruners.BasePruner]:
    median = lambda: optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)  # noqa: E731
    return {"none": optuna.pruners.NopPruner(), "median": median(), "fold-paired": FoldPairedPruner(),
            "median+fold-paired": AnyPruner(median(), FoldPairedPruner()),
            "successive-halving": optuna.pruners.SuccessiveHalvingPruner(),
            "successive-halving-5": optuna.pruners.SuccessiveHalvingPruner(min_resource=5),
            "successive-halving-5-startup": AfterStartup(optuna.pruners.SuccessiveHalvingPruner(min_resource=5), 5),
            "hyperband": optuna.pruners.HyperbandPruner(max_resource=spec.max_epochs)}


STUDIES = Path(__file__).resolve().parent.parent / "studies"


def base_study(name: str, seed: int, trials: int) -> Study:
    if (STUDIES / f"{name}.py").is_file():  # a shipped study, as a user runs it
        return load_study_file(STUDIES / f"{name}.py").replace(n_trials=trials, seed=seed)
    return quality_study(name, seed, trials, {})


def sweep(spec: Study) -> list[optuna.trial.FrozenTrial]:
    with tempfile.TemporaryDirectory() as folder:
        study = run_study(spec, load_dataset(spec), storage=f"sqlite:///{folder}/s.db", progress=False,
                          out=io.StringIO())
        return study.get_trials(deepcopy=True)


def timeline(trials: list) -> list[tuple[float, float, float]]:
    """(seconds since the first start, best CV loss so far, its standard error), per finished trial."""
    start = min(t.datetime_start for t in trials)
    done = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)),
                  key=lambda t: t.datetime_complete)
    best, se, points = np.inf, 0.0, []
    for t in done:
        if t.state == TrialState.COMPLETE and t.value < best:
            best = t.value
            k = len(t.user_attrs.get("fold_val_losses") or [1])
            se = (t.user_attrs.get("cv_loss_std") or 0.0) / np.sqrt(k)
        points.append(((t.datetime_complete - start).total_seconds(), best, se))
    return points


def fold_epochs(trials: list) -> int:
    return sum(len(c) for t in trials for c in (t.user_attrs.get("fold_curves") or []))


def time_to(points: list, target: float) -> float | None:
    return next((s for s, best, _ in points if best <= target), None)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--datasets", default="digits,wine_red")
    p.add_argument("--variants", default="none,median,fold-paired,median+fold-paired,successive-halving,"
                   "successive-halving-5,hyperband", help="pruners to compare (median is always run)")
    p.add_argument("--converged", action="store_true", help="only the converged-stop measurement")
    p.add_argument("--json", help="append results as JSON lines")
    args = p.parse_args()
    quiet_optuna()
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.converged:
        return converged_table(seeds, args.json)
    rows = {}
    for name in args.datasets.split(","):
        for seed in seeds:
            spec = base_study(name, seed, args.trials)
            wanted = {"median", *args.variants.split(",")}
            runs = {v: sweep(spec.replace(pruner=pruner)) for v, pruner in pruners(spec).items() if v in wanted}
            yard = timeline(runs["median"])
            final_best, final_se = yard[-1][1], yard[-1][2]
            reference = time_to(yard, final_best)
            for variant, trials in runs.items():
                points = timeline(trials)
                reached = time_to(points, final_best + final_se)
                result = {"dataset": name, "seed": seed, "variant": variant, "final_best": points[-1][1],
                          "yardstick": final_best, "se": final_se, "reached_s": reached, "median_own_best_s": reference,
                          "total_s": points[-1][0], "fold_epochs": fold_epochs(trials),
                          "pruned": sum(t.state == TrialState.PRUNED for t in trials)}
                print(json.dumps(result), file=sys.stderr, flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(result) + "\n")
                rows.setdefault((name, variant), []).append(result)
    print(f"\n{args.trials} trials per sweep, seeds {args.seeds}; yardstick: MedianPruner's final best CV loss\n")
    print("| dataset | pruner | time to within 1 SE of the yardstick (x MedianPruner's time to it) "
          "| final best - yardstick (in SE) | fold-epochs (x MedianPruner's) | pruned | sweep time |")
    print("|---|---|---|---|---|---|---|")
    for (name, variant), results in rows.items():
        medians = {r["seed"]: r for r in rows[(name, "median")]}
        ratio = statistics.median((r["reached_s"] if r["reached_s"] is not None else float("inf"))
                                  / medians[r["seed"]]["reached_s"] for r in results)
        gap = statistics.median((r["final_best"] - r["yardstick"]) / max(r["se"], 1e-12) for r in results)
        epochs = statistics.median(r["fold_epochs"] / medians[r["seed"]]["fold_epochs"] for r in results)
        print(f"| {name} | {variant} | {ratio:.2f} | {gap:+.2f} | {epochs:.2f} | "
              f"{statistics.median(r['pruned'] for r in results):.0f} | "
              f"{statistics.median(r['total_s'] for r in results):.0f} s |")


def converged_table(seeds: list[int], json_path: str | None) -> None:
    print("| seed | trials run by stop=\"converged\" | its best | 200-trial best | within 1 SE | why it stopped |")
    print("|---|---|---|---|---|---|")
    for seed in seeds:
        spec = base_study("digits", seed, 200)
        full = timeline(sweep(spec))
        with tempfile.TemporaryDirectory() as folder:
            study = run_study(spec.replace(stop="converged"), load_dataset(spec), storage=f"sqlite:///{folder}/c.db",
                              progress=False, out=io.StringIO())
            trials = study.get_trials(deepcopy=True)
            reason = study.user_attrs.get("stop_reason", "(ran to its cap)")
        stopped = timeline(trials)
        finished = sum(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in trials)
        within = bool(stopped[-1][1] <= full[-1][1] + full[-1][2])
        result = {"seed": seed, "trials": finished, "best": float(stopped[-1][1]), "full_best": float(full[-1][1]),
                  "se": float(full[-1][2]), "within": within, "reason": reason}
        print(json.dumps(result), file=sys.stderr, flush=True)
        if json_path:
            with open(json_path, "a") as f:
                f.write(json.dumps(result) + "\n")
        print(f"| {seed} | {finished} | {stopped[-1][1]:.4f} | {full[-1][1]:.4f} | {'yes' if within else 'no'} | "
              f"{reason} |", flush=True)


if __name__ == "__main__":
    main()

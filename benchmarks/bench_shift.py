"""Covariate shift: importance weighting and domain-adversarial training against no adaptation.

    python benchmarks/bench_shift.py [--shifts wine,california] [--seeds 0,1,2] [--trials 15]
                                     [--variants none,density_ratio,searched,adversarial,adversarial=1]

Two real shifts. wine: trained on the 1,599 red wines; the deployment is white wines: 1,500
of them (a seeded sample, without the rows equal to a held-out one) are the unlabeled
`target_data`, the other white wines are the held-out test rows. california: trained on the
districts north of latitude 36; the southern districts are the deployment, split the same
way (a third as target rows, the rest held out). For each shift and seed, the quality
benchmark's template (`bench_quality.study` ranges and defaults, `--trials` trials) sweeps
with `importance` "none", "density_ratio", and both searched, and with domain-adversarial
training (`adversarial` searched in 0.01-1, log scale, and fixed at 1); each sweep's final model is scored
on the same held-out rows. Medians over seeds of RMSE (in the target's units).
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

import numpy as np

from sweeps import Categorical, Float, Space, Study, Table
from sweeps._cli import quiet_optuna
from sweeps.data.dataset import _row_hashes, load_dataset
from sweeps.results.evaluate import evaluate_study
from sweeps.sweep.optimize import run_study

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import DATA, RANGES, WINE, california  # noqa: E402

VARIANTS = {"none": {}, "density_ratio": {"importance": "density_ratio"},
            "searched": {"importance": Categorical(["none", "density_ratio"])},
            "adversarial": {"adversarial": Float(0.01, 1.0, log=True)}, "adversarial=1": {"adversarial": 1.0}}


def shift(name: str, seed: int):
    """(train (X, y), target X, test (X, y)) of one real shift."""
    rng = np.random.default_rng(seed)
    if name == "wine":
        train = Table(DATA / "winequality-red.csv.gz", target="quality", columns=WINE)()
        X, y = Table(DATA / "winequality-white.csv.gz", target="quality", columns=WINE)()
        n_target = 1500
    else:
        X_all, y_all = california()
        north = (X_all["latitude"] >= 36).to_numpy()
        train = (X_all[north].reset_index(drop=True), y_all[north].reset_index(drop=True))
        X, y = X_all[~north].reset_index(drop=True), y_all[~north].reset_index(drop=True)
        n_target = len(y) // 3
    order = rng.permutation(len(y))
    target, test = order[:n_target], order[n_target:]
    target = target[~np.isin(_row_hashes(X.iloc[target]), _row_hashes(X.iloc[test]))]  # repeated rows
    return train, X.iloc[target], (X.iloc[test], y.iloc[test])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shifts", default="wine,california")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--trials", type=int, default=15)
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--json")
    args = p.parse_args()
    quiet_optuna()
    rows = []
    for name in args.shifts.split(","):
        by_variant: dict[str, list[dict]] = {}
        for seed in (int(s) for s in args.seeds.split(",")):
            train, target, test = shift(name, seed)
            large = len(train[1]) > 10_000
            for variant in args.variants.split(","):
                options = VARIANTS[variant]
                spec = Study(name=f"{name}-{variant.replace('=', '-')}", task="regression", data=train, test_data=test,
                             target_data=target, n_trials=args.trials, seed=seed,
                             space=Space(**RANGES, batch_size=256 if large else 64, **options),
                             max_epochs=30 if large else 100, patience=4 if large else 10)
                with tempfile.TemporaryDirectory() as folder:
                    url = f"sqlite:///{folder}/s.db"
                    started = time.perf_counter()
                    dataset = load_dataset(spec)
                    run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
                    entry, _ = evaluate_study(spec, dataset, storage=url, model_path=f"{folder}/m.pt", err=io.StringIO())
                result = {"shift": name, "variant": variant, "seed": seed, "rmse": entry["metric"],
                          "cv_loss": entry["cv_loss"], "seconds": time.perf_counter() - started,
                          "chosen": entry["params"].get("importance", "none"),
                          "adversarial": entry["params"].get("adversarial", 0.0), "target_rows": len(target)}
                print(json.dumps(result), file=sys.stderr, flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(result) + "\n")
                by_variant.setdefault(variant, []).append(result)
        rows += [(name, v, rs) for v, rs in by_variant.items()]
    print(f"\n{args.trials} trials per sweep; medians over seeds {args.seeds}\n")
    print("| shift | remedy | held-out RMSE | sweep + evaluate | RMSE per seed (chosen) |")
    print("|---|---|---|---|---|")
    for name, variant, results in rows:
        per_seed = " / ".join(f"{r['rmse']:.4f}" + (f" ({r['chosen']})" if variant == "searched" else "")
                              + (f" (λ {r['adversarial']:.3g})" if variant == "adversarial" else "")
                              for r in results)
        print(f"| {name} | {variant} | {statistics.median(r['rmse'] for r in results):.4f} | "
              f"{statistics.median(r['seconds'] for r in results):.0f} s | {per_seed} |")


if __name__ == "__main__":
    main()

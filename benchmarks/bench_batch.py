"""A whole sweep with several trials per stack: wall time and best CV loss, against one trial at a time.

    python benchmarks/bench_batch.py [--seeds 0,1,2] [--trials 100] [--batches 1,8] [--space shipped|small]
                                     [--json results.jsonl]

For each seed: the shipped studies/digits.py (same space, folds, epochs, patience) run for
`--trials` trials with `run_study(batch=P)` for each P, in one process, one after another.
Printed: the sweep's wall time, its best CV loss, and that best's fold standard error
(fold std / sqrt(k)); medians over seeds, with the time as a ratio to P=1 of the same seed,
and how far each best lies from P=1's best, in P=1's standard errors.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import base_study  # noqa: E402  (the shipped digits study, reseeded)

from sweeps._cli import quiet_optuna  # noqa: E402
from sweeps.data.dataset import load_dataset  # noqa: E402
from sweeps.sweep.optimize import run_study  # noqa: E402


# The shipped digits space with only small nets (one or two layers of 16-64 units): the regime
# where a step is dispatch, which trials in one stack share (`--space small`).
SMALL_NETS = dict(depth=(1, 2), width=(16, 64))


def sweep(seed: int, trials: int, batch: int, space: str = "shipped") -> dict:
    spec = base_study("digits", seed, trials)
    if space == "small":
        spec = spec.replace(space=dataclasses.replace(spec.space, **SMALL_NETS))
    dataset = load_dataset(spec)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        study = run_study(spec, dataset, storage=f"sqlite:///{folder}/s.db", progress=False, out=io.StringIO(),
                          batch=batch)
        seconds = time.perf_counter() - started
        best = study.best_trial
        k = len(best.user_attrs["fold_val_losses"])
        return {"seed": seed, "batch": batch, "seconds": seconds, "best": best.value,
                "se": best.user_attrs["cv_loss_std"] / np.sqrt(k), "trials": len(study.trials),
                "pruned": sum(t.state.name == "PRUNED" for t in study.trials)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--trials", type=int, default=100)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--space", choices=("shipped", "small"), default="shipped",
                   help="small: the same study with depth 1-2 and width 16-64 (where a stack of trials pays)")
    p.add_argument("--json", help="append results as JSON lines")
    args = p.parse_args()
    quiet_optuna()
    batches = [int(b) for b in args.batches.split(",")]
    runs: dict[int, dict[int, dict]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for batch in batches:
            result = sweep(seed, args.trials, batch, args.space)
            runs.setdefault(batch, {})[seed] = result
            print(json.dumps(result), file=sys.stderr, flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps(result) + "\n")
    base = runs[batches[0]]
    space = "" if args.space == "shipped" else f" with depth {SMALL_NETS['depth']}, width {SMALL_NETS['width']}"
    print(f"\nstudies/digits.py{space}, {args.trials} trials, seeds {args.seeds}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; medians over seeds\n")
    print(f"| P | sweep wall time | x P={batches[0]} | best CV loss | best - P={batches[0]}'s best (in its SE) "
          "| pruned |")
    print("|---|---|---|---|---|---|")
    for batch in batches:
        rs = list(runs[batch].values())
        ratio = statistics.median(r["seconds"] / base[r["seed"]]["seconds"] for r in rs)
        gap = statistics.median((r["best"] - base[r["seed"]]["best"]) / base[r["seed"]]["se"] for r in rs)
        print(f"| {batch} | {statistics.median(r['seconds'] for r in rs):.0f} s | {ratio:.2f} | "
              f"{statistics.median(r['best'] for r in rs):.4f} | {gap:+.2f} | "
              f"{statistics.median(r['pruned'] for r in rs):.0f} |")


if __name__ == "__main__":
    main()

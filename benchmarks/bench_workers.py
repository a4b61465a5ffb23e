"""Trials per minute with 1 and 2 worker processes on this machine, same run.

    python benchmarks/bench_workers.py [--trials 24] [--reps 2] [--reproducible]

Each repetition runs the same 24-trial digits sweep (5 folds, at most 30 epochs, median
pruning) into a fresh SQLite file, once with `--workers 1` (torch uses every core) and once
with `--workers 2` (cores divided), alternating. Throughput is finished trials over the
time from the first trial's start to the last trial's end, read from the study itself, so
process start-up is not counted; the wall time of the whole command is printed beside it.
`--reproducible` adds `--workers 2 --reproducible` (fixed rounds) to the alternation: what
reproducibility costs in throughput.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
from optuna.trial import TrialState

STUDY = """
from sklearn.datasets import load_digits
from sweeps import Study, Space
study = Study(name="bench", task="classification", data=lambda: load_digits(return_X_y=True),
              space=Space(depth=(1, 3), width=(16, 256)), folds=5, max_epochs=30, patience=5,
              n_trials={trials}, seed=0)
"""


def one_run(workers: int, trials: int, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.py"
        path.write_text(STUDY.format(trials=trials))
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sweeps.run", str(path), "--workers", str(workers), "--no-progress",
                        *extra],
                       cwd=tmp, check=True, capture_output=True)
        wall = time.perf_counter() - start
        study = optuna.load_study(study_name="bench", storage=f"sqlite:///{tmp}/storage/bench.db")
        done = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
        span = (max(t.datetime_complete for t in done) - min(t.datetime_start for t in done)).total_seconds()
        return len(done) / span * 60, wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=24)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--reproducible", action="store_true", help="also 2 workers in fixed rounds")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    variants = {"1": (1, ()), "2": (2, ())}
    if args.reproducible:
        variants["2 --reproducible"] = (2, ("--reproducible",))
    rates = {name: [] for name in variants}
    walls = {name: [] for name in variants}
    for _ in range(args.reps):
        for name, (workers, extra) in variants.items():
            rate, wall = one_run(workers, args.trials, extra)
            rates[name].append(rate)
            walls[name].append(wall)
            print(f"  workers={name}: {rate:.1f} trials/min, command wall {wall:.1f} s", flush=True)
    print(f"\n| workers | trials/min (median of {args.reps}) | x 1 worker | command wall time |")
    print("|---|---|---|---|")
    one = statistics.median(rates["1"])
    for name in variants:
        rate = statistics.median(rates[name])
        print(f"| {name} | {rate:.1f} | {rate / one:.2f} | {statistics.median(walls[name]):.1f} s |")


if __name__ == "__main__":
    main()

"""A command's fixed costs: how long it takes to end, and how long `--workers N` takes to start.

    python benchmarks/bench_startup.py [--reps 5] [--workers 2] [--trials 6] [--baseline CHECKOUT]

Same run, alternating, medians of `--reps`:

- **The end of a process.** A child imports what a worker imports (`sweeps.worker`: torch,
  scikit-learn, optuna), prints the time, and exits, once with `sys.exit` and once with
  `sweeps._args.leave` (what every command and worker now ends with). Reported: seconds from
  the print to the exit.
- **Workers started early.** The same small digits sweep with `--workers N`, once from Python
  (`sweeps.optimize(path, workers=N)`: the children start when the launcher has loaded the
  data) and once as `python -m sweeps.run path --workers N` (the children start before the
  launcher imports anything, and import beside it). Reported: seconds from the command's start
  to the first trial's start (read from the study), and to the command's end. `--baseline`
  adds the same command line run from another checkout's `src` (`git worktree add /tmp/base
  COMMIT`): before this change, each child was started by a task in a loky process once the
  launcher had loaded everything.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

STUDY = """
from sklearn.datasets import load_digits
from sweeps import Study, Space
study = Study(name="startup", task="classification", data=lambda: load_digits(return_X_y=True),
              space=Space(depth=(1, 2), width=(16, 64)), folds=3, max_epochs=4, patience=3,
              n_trials={trials}, seed=0)
"""

ENDINGS = {
    "sys.exit": "import sys, time, sweeps.worker; print(time.time(), flush=True); sys.exit(0)",
    "leave": "import time, sweeps.worker; from sweeps import _args; print(time.time(), flush=True); _args.leave(0)",
}


def ending(code: str) -> float:
    process = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return time.time() - float(process.stdout.strip())


def sweep(command: list[str], folder: Path, env: dict | None = None) -> tuple[float, float]:
    """(seconds to the first trial's start, seconds to the end) of one sweep command."""
    started = time.time()
    subprocess.run(command, cwd=folder, check=True, capture_output=True, env=env)
    ended = time.time()
    study = optuna.load_study(study_name="startup", storage=f"sqlite:///{folder / 'storage' / 'startup.db'}")
    first = min(t.datetime_start.timestamp() for t in study.trials)
    return first - started, ended - started


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--trials", type=int, default=6)
    p.add_argument("--baseline", type=Path, help="another checkout, whose command line is timed too")
    args = p.parse_args()
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    ends: dict[str, list[float]] = {name: [] for name in ENDINGS}
    for _ in range(args.reps):
        for name, code in ENDINGS.items():
            ends[name].append(ending(code))
    base, new = (statistics.median(ends[n]) for n in ENDINGS)
    print(f"end of a process that imported sweeps.worker: sys.exit {base:.2f} s, leave {new:.2f} s "
          f"(ratio {new / base:.2f}; medians of {args.reps})")

    command_line = lambda path: [sys.executable, "-m", "sweeps.run", str(path), "--workers", str(args.workers),  # noqa: E731
                                 "--no-progress"]
    ways = {}
    if args.baseline:
        ways[f"command line of {args.baseline}"] = (command_line, {**os.environ, "PYTHONPATH": str(args.baseline / "src")})
    ways["children started at launch (sweeps.optimize)"] = (lambda path: [
        sys.executable, "-c", f"import sweeps; from sweeps import _args; sweeps.optimize({str(path)!r}, "
                              f"workers={args.workers}, progress=False); _args.leave(0)"], None)
    ways["children started first (python -m sweeps.run)"] = (command_line, None)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in ways}
    for _ in range(args.reps):
        for name, (command, env) in ways.items():
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "startup.py"
                path.write_text(STUDY.format(trials=args.trials))
                times[name].append(sweep(command(path), Path(tmp), env))
    medians = {name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts))
               for name, ts in times.items()}
    for name, (first, end) in medians.items():
        print(f"--workers {args.workers}, {args.trials} trials, {name}: first trial after {first:.1f} s, "
              f"done after {end:.1f} s")
    first1, end1 = medians["children started first (python -m sweeps.run)"]
    for name, (first0, end0) in medians.items():
        if not name.startswith("children started first"):
            print(f"ratios, started first / {name}: first trial {first1 / first0:.2f}, whole command {end1 / end0:.2f}")


if __name__ == "__main__":
    main()

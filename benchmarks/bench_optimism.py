"""How optimistic is the CV loss of early-stopped folds? The honest estimate on the shipped studies.

    python benchmarks/bench_optimism.py [--studies digits,breast_cancer,diabetes,wine_red] [--trials 20]

For each shipped study file (its own space, folds, epochs and patience; `--trials` trials,
seed 0): over the complete trials, the CV loss, the honest CV loss (each fold scored at the
epoch the *other* folds' curves choose; README "An honest CV estimate") and their
difference, the optimism: its mean, and the best trial's, also relative to its CV loss.
"""

from __future__ import annotations

import argparse
import io
import statistics
import tempfile
from pathlib import Path

from optuna.trial import TrialState

from sweeps._cli import quiet_optuna
from sweeps.data.dataset import load_dataset
from sweeps.sweep.optimize import run_study
from sweeps.spec.study import load_study_file

STUDIES = Path(__file__).resolve().parent.parent / "studies"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--studies", default="digits,breast_cancer,diabetes,wine_red")
    p.add_argument("--trials", type=int, default=20)
    args = p.parse_args()
    quiet_optuna()
    print("| study | patience | complete trials | mean optimism | best trial: CV loss | honest | optimism |")
    print("|---|---|---|---|---|---|---|")
    for name in args.studies.split(","):
        spec = load_study_file(STUDIES / f"{name}.py").replace(n_trials=args.trials, seed=0)
        with tempfile.TemporaryDirectory() as folder:
            study = run_study(spec, load_dataset(spec), storage=f"sqlite:///{folder}/s.db", progress=False,
                              out=io.StringIO())
            complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                        if t.user_attrs.get("cv_optimism") is not None]
            best = study.best_trial
        mean = statistics.mean(t.user_attrs["cv_optimism"] for t in complete)
        a = best.user_attrs
        print(f"| {name} | {spec.patience} | {len(complete)} | {mean:+.4f} | {best.value:.4f} | "
              f"{a['honest_cv_loss']:.4f} | {a['cv_optimism']:+.4f} ({a['cv_optimism'] / best.value:+.1%}) |",
              flush=True)


if __name__ == "__main__":
    main()

"""`python -m sweeps.run STUDY_FILE`: run (or resume) a sweep and summarise it.

    python -m sweeps.run studies/digits.py [--n-trials N] [--timeout S] [--storage URL]
                                           [--seed N] [--device auto|cpu|cuda]

The study file's `n_trials` is the number of finished (complete or pruned) trials the
study aims for: a rerun after an interruption tops it up, a rerun of a finished study
does nothing. `--n-trials N` runs N trials more than the study already has.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

import numpy as np
import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from sweeps import _cli, notes, record
from sweeps.data import Dataset
from sweeps.errors import SweepsError
from sweeps.folds import make_folds
from sweeps.objective import make_objective
from sweeps.storage import describe, open_storage, resolve_url, study_exists
from sweeps.study import Study

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def default_sampler(spec: Study, n_existing: int) -> optuna.samplers.BaseSampler:
    # Offsetting the seed by the trials already stored keeps a resumed study from
    # replaying the first run's random start-up configurations.
    return optuna.samplers.TPESampler(seed=spec.seed + n_existing, multivariate=True)


def default_pruner() -> optuna.pruners.BasePruner:
    # 5 complete trials before judging anyone, and no judgement in the first 5 epochs,
    # when losses of good and bad learning rates still overlap.
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=5)


def run_study(spec: Study, dataset: Dataset, *, storage: str | None = None,
              n_trials: int | None = None, timeout: float | None = None, device: str = "cpu",
              progress: bool = True, out: TextIO = sys.stdout) -> optuna.Study:
    """Create or resume `spec`'s Optuna study and run trials until its target is reached."""
    url = resolve_url(spec.name, storage)
    folds = make_folds(dataset, spec.folds, spec.seed, device)  # before touching storage
    rdb = open_storage(url, create=True)
    existing = None
    if study_exists(rdb, spec.name):
        existing = optuna.load_study(study_name=spec.name, storage=rdb)
        record.check_same_study(existing, spec, dataset, describe(url))
    n_existing = len(existing.trials) if existing else 0

    study = optuna.create_study(
        storage=rdb, study_name=spec.name, direction="minimize", load_if_exists=True,
        sampler=spec.sampler or default_sampler(spec, n_existing),
        pruner=spec.pruner or default_pruner(),
    )
    record.write_study(study, spec, dataset)
    study.set_metric_names([record.OBJECTIVE_NAME])
    notes.refresh(study)

    finished = _count(study, FINISHED)
    target = finished + n_trials if n_trials is not None else spec.n_trials
    to_run = target - finished
    where = describe(url)
    if existing is not None:
        print(f"Resuming study '{spec.name}' in {where}: {finished} finished trials kept.", file=out)
    if to_run <= 0:
        print(f"Study '{spec.name}' already has {finished} finished trials (target {target}); "
              "pass --n-trials N to run N more.", file=out)
        return study
    print(f"Running {to_run} trial(s) of '{spec.name}' on {device} "
          f"({spec.folds}-fold CV of {len(dataset.dev)} rows; {len(dataset.test)} rows held out "
          f"for the final test).", file=out)

    callbacks = [optuna.study.MaxTrialsCallback(target, states=FINISHED)]
    with tqdm(total=to_run, unit="trial", disable=not progress, file=sys.stderr,
              dynamic_ncols=True) as bar:
        callbacks.append(_ProgressCallback(bar))
        study.optimize(
            make_objective(spec, folds),
            n_trials=to_run,  # an upper bound; MaxTrialsCallback counts finished trials exactly
            timeout=timeout if timeout is not None else spec.timeout,
            callbacks=callbacks,
            catch=(MemoryError,),  # e.g. a net too wide for this machine: that trial fails, the study goes on
        )
    return study


class _ProgressCallback:
    def __init__(self, bar: tqdm) -> None:
        self.bar = bar

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        counts = {s: 0 for s in ("complete", "pruned", "fail")}
        best = None
        for t in study.get_trials(deepcopy=False):
            name = t.state.name.lower()
            if name in counts:
                counts[name] += 1
            if t.state == TrialState.COMPLETE and (best is None or t.value < best):
                best = t.value
        self.bar.set_postfix(best=f"{best:.4g}" if best is not None else "-",
                             pruned=counts["pruned"], failed=counts["fail"], refresh=False)
        self.bar.update(1)


def _count(study: optuna.Study, states: tuple) -> int:
    return len(study.get_trials(deepcopy=False, states=states))


def summary(study: optuna.Study, url: str, seconds: float | None = None) -> str:
    """The end-of-run report: best trial, its CV loss ± fold spread and metric, counts, where."""
    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == state for t in trials)
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    lines = [f"Study '{study.study_name}': {counts[TrialState.COMPLETE]} complete, "
             f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed trials{took}."]
    if counts[TrialState.COMPLETE]:
        best = study.best_trial
        a = best.user_attrs
        name = a.get("metric_name", "metric")
        lines.append(
            f"Best trial #{best.number}: cv_loss {best.value:.4f} ± {a.get('cv_loss_std', float('nan')):.4f} "
            f"(std over {len(a.get('fold_val_losses', []))} folds), {name} "
            f"{a.get('metric', float('nan')):.4f} ± {a.get('metric_std', float('nan')):.4f}, "
            f"median best epoch {int(np.median(a.get('best_epochs', [0])))}")
        lines.append("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()))
    else:
        lines.append("No trial completed yet.")
    shown = describe(url)
    lines.append(f"Results: {shown}")
    lines.append(f"Browse:  optuna-dashboard {shown}")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("python -m sweeps.run", "Run or resume a hyperparameter sweep.")
    p.add_argument("--n-trials", type=int, metavar="N", help="run N more trials than the study has")
    p.add_argument("--timeout", type=float, metavar="S", help="start no new trial after S seconds")
    p.add_argument("--seed", type=int, metavar="N", help="override the study file's seed")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train (auto: CUDA when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    def body() -> int:
        if args.n_trials is not None and args.n_trials < 1:
            raise SweepsError(f"--n-trials must be >= 1, got {args.n_trials}.")
        if args.timeout is not None and args.timeout <= 0:
            raise SweepsError(f"--timeout must be a positive number of seconds, got {args.timeout}.")
        _cli.quiet_optuna()
        _cli.set_threads()
        device = _cli.resolve_device(args.device)
        spec, dataset = _cli.load(args.study_file, seed=args.seed)
        started = time.perf_counter()
        study = run_study(spec, dataset, storage=args.storage, n_trials=args.n_trials,
                          timeout=args.timeout, device=str(device), progress=not args.no_progress)
        print(summary(study, resolve_url(spec.name, args.storage), time.perf_counter() - started))
        return 0

    return _cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())

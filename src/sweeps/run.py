"""`python -m sweeps.run STUDY_FILE`: run (or resume) a sweep and summarise it.

    python -m sweeps.run studies/digits.py [--n-trials N] [--timeout S] [--storage URL]
                                           [--seed N] [--device auto|cpu|cuda]

The study file's `n_trials` is the number of finished (complete or pruned) trials the
study aims for: a rerun after an interruption tops it up, a rerun of a finished study
does nothing. `--n-trials N` runs N trials more than the study already has.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from sweeps import _cli, notes, record
from sweeps.data import Dataset
from sweeps.errors import SweepsError
from sweeps.cache import cached_folds
from sweeps.objective import make_objective, prepare, transfer
from sweeps.storage import describe, open_storage, resolve_url, study_exists, use_wal
from sweeps.study import Study
from sweeps.search import default_batch, default_pruner, default_sampler
from sweeps.launcher import connect, is_remote, launch, scheduler_address
from sweeps.workers import Budget, WorkerJob, counts, optimize_until

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


def run_study(spec: Study, dataset: Dataset, *, storage: str | None = None,
              n_trials: int | None = None, timeout: float | None = None, device: str = "cpu",
              progress: bool = True, out: TextIO = sys.stdout, workers: int = 1,
              study_file: str | None = None, overrides: dict | None = None,
              heartbeat: tuple[int, int] = (10, 60), accept_changed_settings: bool = False,
              until_converged: bool | None = None, reproducible: bool = False,
              batch: int | None = None, cluster: str | None = None, client=None) -> optuna.Study:
    """Create or resume `spec`'s Optuna study and run trials until its target is reached.

    With `workers` > 1, that many processes run trials together; each loads `study_file`
    (with `overrides`) itself. `cluster` ("dask://HOST:PORT") runs them on a Dask cluster
    (`workers` of them; 1: as many as the cluster has threads). `heartbeat` is (interval,
    grace period) in seconds. Everything that can be refused is checked before the storage
    is written. `client`: a Dask client already connected to `cluster` (the command line
    connects before it loads the data); it is closed when the sweep ends.
    """
    url = resolve_url(spec.name, storage)
    if cluster is not None and client is None:
        check_cluster(cluster, url, reproducible, study_file)
        client = connect(cluster)  # an unreachable scheduler is refused before anything is written
    try:
        if client is not None and workers == 1:
            workers = max(1, sum(client.nthreads().values()))
        return _run_study(spec, dataset, url, n_trials, timeout, device, progress, out, workers, study_file,
                          overrides, heartbeat, accept_changed_settings, until_converged, reproducible, batch,
                          cluster, client)
    finally:
        if client is not None:
            client.close(timeout=10)


def check_cluster(cluster: str, url: str, reproducible: bool, study_file: str | None) -> None:
    """What --cluster cannot go with, refused before anything slow."""
    scheduler_address(cluster)  # a malformed address first: the checks below read its host
    if url.startswith("sqlite") and is_remote(cluster):
        raise SweepsError(f"--cluster {cluster} runs workers on other machines, and they cannot share an "
                          "SQLite file safely (file locks do not hold over a network); give every machine "
                          "one database with --storage postgresql://USER@HOST/DB.")
    if reproducible:
        raise SweepsError("--reproducible hands out its rounds from this machine to local workers; "
                          "drop --cluster to reproduce a sweep, or --reproducible to run it on the cluster.")
    if study_file is None:
        raise SweepsError("--cluster needs the study file's path: each worker loads it itself.")


def _run_study(spec, dataset, url, n_trials, timeout, device, progress, out, workers, study_file, overrides,
               heartbeat, accept_changed_settings, until_converged, reproducible, batch, cluster, client):
    spec.check_space()  # a space function that raises or returns bad values fails here
    folds = cached_folds(dataset, spec.folds, spec.seed, device, scaling=spec.preprocessing)
    # a wrong init_from fails before anything is written
    transfer(spec, folds.n_features, folds.n_outputs, dataset.columns)
    rdb = open_storage(url, create=True, heartbeat_interval=heartbeat[0], grace_period=heartbeat[1])
    existing = None
    if study_exists(rdb, spec.name):
        existing = optuna.load_study(study_name=spec.name, storage=rdb)
        record.check_sweeps_study(existing, describe(url))
        aligned = record.check_same_study(existing, spec, dataset, describe(url), accept_changed_settings)
        if aligned is not dataset:  # the same table with its columns in another order: read in the study's
            dataset = aligned
            folds = cached_folds(dataset, spec.folds, spec.seed, device, scaling=spec.preprocessing)
    use_wal(rdb)
    n_existing = len(existing.trials) if existing else 0

    study = optuna.create_study(
        storage=rdb, study_name=spec.name, direction="minimize", load_if_exists=True,
        sampler=spec.sampler or default_sampler(spec, n_existing),
        pruner=spec.pruner or default_pruner(),
    )
    record.write_study(study, spec, dataset)
    record.name_objective(study)
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
    print(f"Running {to_run} trial(s) of '{spec.name}' on {device}"
          f"{f' with {workers} workers' if workers > 1 else ''}{f' on {cluster}' if cluster else ''} ({spec.folds}-fold CV of "
          f"{len(dataset.dev)} rows; {len(dataset.test)} rows held out for the final test).", file=out)

    timeout = timeout if timeout is not None else spec.timeout
    until_converged = until_converged if until_converged is not None else spec.stop == "converged"
    budget = Budget(target, deadline=time.time() + timeout if timeout else None, until_converged=until_converged)
    with tqdm(total=to_run, unit="trial", disable=not progress, file=sys.stderr, dynamic_ncols=True) as bar:
        shown = _Progress(bar, finished)
        batch = batch or default_batch(spec)
        if workers == 1 and client is None:
            optimize_until(study, make_objective(spec, folds), budget,
                           on_trial=lambda s, t: shown(counts(s)), batch=batch)
        else:
            if study_file is None:
                raise SweepsError("workers > 1 need the study file's path: each worker loads it itself.")
            # On a cluster each Dask worker divides its own machine's cores (threads 0).
            threads = 0 if client is not None else max(1, (os.cpu_count() or 1) // workers)
            jobs = [WorkerJob(str(Path(study_file).resolve()), overrides or {}, url, budget, device, threads, i,
                              *heartbeat, reproducible=reproducible, batch=1 if reproducible else batch,
                              cwd=os.getcwd())
                    for i in range(workers)]
            prepared, _ = prepare(spec, folds)  # the space as the workers' objectives see it
            launch(jobs, study, budget, on_progress=shown, suggest=prepared.suggest, client=client,
                   grace=heartbeat[1])
    return study


class _Progress:
    """Moves the bar to the number of trials finished since the start, with counts beside it."""

    def __init__(self, bar: tqdm, finished_at_start: int) -> None:
        self.bar, self.start = bar, finished_at_start

    def __call__(self, c: dict) -> None:
        done = c[TrialState.COMPLETE] + c[TrialState.PRUNED] - self.start
        self.bar.set_postfix(pruned=c[TrialState.PRUNED], failed=c[TrialState.FAIL],
                             running=c[TrialState.RUNNING], refresh=False)
        self.bar.update(max(0, done - self.bar.n))


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
        if a.get("honest_cv_loss") is not None:
            lines.append(f"  honest CV loss {a['honest_cv_loss']:.4f} (each fold's stopping epoch chosen on the "
                         f"other folds): early stopping made the CV loss {a['cv_optimism']:.4f} optimistic")
        lines.append("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()))
    else:
        lines.append("No trial completed yet.")
    if study.user_attrs.get("stop_reason"):
        lines.append(f"Stopped early, {study.user_attrs['stop_reason']}.")
    shown = describe(url)
    lines.append(f"Results: {shown}")
    lines.append(f"Browse:  optuna-dashboard {shown}")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("python -m sweeps.run", "Run or resume a hyperparameter sweep.")
    p.add_argument("--n-trials", type=int, metavar="N", help="run N more trials than the study has")
    p.add_argument("--timeout", type=_cli.positive_seconds, metavar="S", help="start no new trial after S seconds")
    p.add_argument("--seed", type=int, metavar="N", help="override the study file's seed")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="where to train (auto: CUDA when available)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes on this machine, sharing the study (default 1)")
    p.add_argument("--cluster", metavar="dask://HOST:PORT",
                   help="run the workers on an existing Dask cluster (pip install -e '.[dask]'); --workers N of "
                        "them (default: one per Dask worker thread); needs a --storage every machine reaches "
                        "(PostgreSQL) unless the scheduler is on this machine")
    p.add_argument("--heartbeat-interval", type=int, default=10, metavar="S",
                   help="seconds between a running trial's heartbeats (default 10)")
    p.add_argument("--grace-period", type=int, default=60, metavar="S",
                   help="a trial silent this long is failed and retried (default 60)")
    p.add_argument("--until-converged", action="store_true",
                   help="also stop when further trials are unlikely to beat the best by more than the folds' "
                        "noise (README: 'When is the study done?'); --n-trials and --timeout stay caps")
    p.add_argument("--batch", type=int, metavar="P",
                   help="ask the sampler for P trials at a time and train those of one shape in one stack "
                        "(default: measured, README 'Many trials in one stack')")
    p.add_argument("--reproducible", action="store_true",
                   help="with --workers: ask and tell in fixed rounds of N trials, so that the same study file "
                        "and seed give the same trials and values whatever the timing (slower: each round "
                        "waits for its slowest trial)")
    p.add_argument("--accept-changed-settings", action="store_true",
                   help="go on with a study whose max_epochs, patience or validation changed (recorded "
                        "in its settings_history); without it such a change is refused")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)

    def body() -> int:
        if args.batch is not None and not 1 <= args.batch <= 64:
            raise SweepsError(f"--batch must be between 1 and 64, got {args.batch}.")
        if args.n_trials is not None and args.n_trials < 1:
            raise SweepsError(f"--n-trials must be >= 1, got {args.n_trials}.")
        cores = os.cpu_count() or 1
        if args.workers < 1 or (args.cluster is None and args.workers > 4 * cores):
            raise SweepsError(f"--workers must be between 1 and 4 x this machine's {cores} cores = {4 * cores}, "
                              f"got {args.workers}; more workers than that only share the same cores.")
        if args.heartbeat_interval < 1 or args.grace_period <= args.heartbeat_interval:
            raise SweepsError("--grace-period must be longer than --heartbeat-interval (both in seconds, >= 1).")
        _cli.quiet_optuna()
        _cli.set_threads(args.workers)
        device = _cli.resolve_device(args.device)
        spec = _cli.load_spec(args.study_file, seed=args.seed)
        client = None
        if args.cluster is not None:  # the address and the scheduler, before the data's load
            check_cluster(args.cluster, resolve_url(spec.name, args.storage), args.reproducible, args.study_file)
            client = connect(args.cluster)
        try:
            dataset = _cli.load_data(args.study_file, spec)
        except BaseException:
            if client is not None:
                client.close(timeout=10)
            raise
        started = time.perf_counter()
        study = run_study(spec, dataset, storage=args.storage, n_trials=args.n_trials,
                          timeout=args.timeout, device=str(device), progress=not args.no_progress,
                          workers=args.workers, study_file=args.study_file,
                          overrides={"seed": args.seed} if args.seed is not None else {},
                          heartbeat=(args.heartbeat_interval, args.grace_period),
                          accept_changed_settings=args.accept_changed_settings,
                          until_converged=True if args.until_converged else None,
                          reproducible=args.reproducible, batch=args.batch, cluster=args.cluster, client=client)
        print(summary(study, resolve_url(spec.name, args.storage), time.perf_counter() - started))
        return 0

    return _cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())

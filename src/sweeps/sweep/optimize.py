"""Run (or resume) a study's sweep until its target: the loop that `python -m sweeps.run`,
`sweeps.optimize` and every worker share.

The study file's `n_trials` is the number of finished (complete or pruned) trials the study
aims for: a rerun after an interruption tops it up, a rerun of a finished study does
nothing; `RunOptions.n_trials` runs that many more than the study already has.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from sweeps.data.cache import cached_folds
from sweeps.data.dataset import Dataset
from sweeps.errors import STDOUT, SweepsError, option
from sweeps.spec.options import STOPS
from sweeps.spec.study import Study
from sweeps.store import candidates, notes, record
from sweeps.store.storage import describe, open_storage, resolve_url, study_exists, use_wal
from sweeps.sweep.children import WORKERS_PER_CORE, WaitingWorkers, most_workers
from sweeps.sweep.launcher import connect, is_remote, launch, scheduler_address
from sweeps.sweep.objective import make_objective
from sweeps.sweep.search import default_batch, default_pruner, default_sampler
from sweeps.sweep.trial import prepare, transfer
from sweeps.sweep.workers import Budget, WorkerJob, counts, optimize_until

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
MAX_BATCH = 64


@dataclass(frozen=True)
class RunOptions:
    """How to run a sweep, checked once, here, for the command line and Python alike.

    Args:
        n_trials: run this many trials more than the study has (None: up to the study's own).
        timeout: seconds after which no new trial starts (None: the study's `timeout`).
        device: "cpu" or "cuda" (resolved, not "auto").
        workers: processes on this machine (or, with `cluster`, tasks on the cluster; 1 there:
            one per Dask worker thread).
        cluster: "dask://HOST:PORT" of a Dask scheduler.
        batch: slots: trials trained at once, in shared stacks, each slot refilled as soon as its
            trial ends (None: measured default).
        reproducible: with workers, ask and tell in fixed rounds (same trials whatever the timing).
        heartbeat: (interval, grace period) in seconds.
        stop: "converged" also ends the study when further trials are unlikely to matter
            (None: the study's `stop`).
        accept_changed_settings: go on with a study whose value settings changed (recorded).
        progress: show a progress bar.
    """

    n_trials: int | None = None
    timeout: float | None = None
    device: str = "cpu"
    workers: int = 1
    cluster: str | None = None
    batch: int | None = None
    reproducible: bool = False
    heartbeat: tuple[int, int] = (10, 60)
    stop: str | None = None
    accept_changed_settings: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        if self.n_trials is not None and (isinstance(self.n_trials, bool) or not isinstance(self.n_trials, int)
                                          or self.n_trials < 1):
            raise SweepsError(f"{option('n_trials')} must be >= 1, got {self.n_trials!r}.")
        if self.timeout is not None and (isinstance(self.timeout, bool) or not isinstance(self.timeout, (int, float))
                                         or not math.isfinite(self.timeout) or self.timeout <= 0):
            raise SweepsError(f"{option('timeout')} must be a positive, finite number of seconds, got "
                              f"{self.timeout!r}.")
        if self.batch is not None and (isinstance(self.batch, bool) or not isinstance(self.batch, int)
                                       or not 1 <= self.batch <= MAX_BATCH):
            raise SweepsError(f"{option('batch')} must be between 1 and {MAX_BATCH}, got {self.batch!r}.")
        cores = os.cpu_count() or 1
        if isinstance(self.workers, bool) or not isinstance(self.workers, int) or self.workers < 1 or (
                self.cluster is None and self.workers > most_workers()):
            raise SweepsError(f"{option('workers')} must be between 1 and {WORKERS_PER_CORE} x this machine's {cores} "
                              f"cores = {most_workers()}, "
                              f"got {self.workers!r}; more workers than that only share the same cores.")
        interval, grace = self.heartbeat
        if interval < 1 or grace <= interval:
            raise SweepsError(f"{option('grace_period')} must be longer than {option('heartbeat_interval')} (both "
                              "in seconds, >= 1).")
        if self.stop not in STOPS:
            raise SweepsError(f"{option('stop')} must be 'converged', got {self.stop!r}.")
        if self.cluster is not None:
            scheduler_address(self.cluster)  # a malformed address is one line, first
            if self.reproducible:
                raise SweepsError(f"{option('reproducible')} hands out its rounds from this machine to local "
                                  f"workers; drop {option('cluster')} to reproduce a sweep, or "
                                  f"{option('reproducible')} to run it on the cluster.")

    def check_storage(self, url: str) -> None:
        """What the options cannot go with on this storage."""
        if self.cluster is not None and url.startswith("sqlite") and is_remote(self.cluster):
            raise SweepsError(f"--cluster {self.cluster} runs workers on other machines, and they cannot share an "
                              "SQLite file safely (file locks do not hold over a network); give every machine "
                              "one database with --storage postgresql://USER@HOST/DB.")


def run_study(spec: Study, dataset: Dataset, options: RunOptions | None = None, *, storage: str | None = None,
              study_file: str | None = None, overrides: dict | None = None, out: TextIO = STDOUT,
              client=None, children: WaitingWorkers | None = None, **option_values) -> optuna.Study:
    """Create or resume `spec`'s Optuna study and run trials until its target is reached.

    `options` (or the same as keywords: `run_study(spec, dataset, n_trials=3)`) say how. With
    `workers` > 1 or a `cluster`, each worker loads `study_file` (with `overrides`) itself.
    Everything that can be refused is checked before the storage is written. `client`: a Dask
    client already connected to the cluster (the command line connects before it loads the
    data); it is closed when the sweep ends. `children`: worker processes the command line
    started before it loaded anything (`children.WaitingWorkers`), so that their imports overlap.
    """
    options = options or RunOptions(**option_values)
    url = resolve_url(spec.name, storage)
    options.check_storage(url)
    if (options.workers > 1 or options.cluster is not None) and study_file is None:
        raise SweepsError(f"workers > 1 and {option('cluster')} need the study file's path (each worker loads it "
                          "itself), "
                          "not a Study object.")
    if options.cluster is not None and client is None:
        client = connect(options.cluster)  # an unreachable scheduler is refused before anything is written
    try:
        return _run(spec, dataset, options, url, study_file, overrides or {}, out, client, children)
    finally:
        if client is not None:
            client.close(timeout=10)


def _run(spec: Study, dataset: Dataset, options: RunOptions, url: str, study_file: str | None, overrides: dict,
         out: TextIO, client, children: WaitingWorkers | None = None) -> optuna.Study:
    device, heartbeat = options.device, options.heartbeat
    workers = options.workers
    if client is not None and workers == 1:
        workers = max(1, sum(client.nthreads().values()))
    spec.check_space()  # a space function that raises or returns bad values fails here
    folds = cached_folds(dataset, spec.folds, spec.seed, device, scaling=spec.preprocessing)
    # a wrong init_from fails before anything is written
    transfer(spec, folds.n_features, folds.n_outputs, dataset.columns)
    rdb = open_storage(url, create=True, heartbeat_interval=heartbeat[0], grace_period=heartbeat[1])
    existing = None
    if study_exists(rdb, spec.name):
        existing = optuna.load_study(study_name=spec.name, storage=rdb)
        record.check_sweeps_study(existing, describe(url))
        aligned = record.check_same_study(existing, spec, dataset, describe(url),
                                           options.accept_changed_settings)
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
    target = finished + options.n_trials if options.n_trials is not None else spec.n_trials
    to_run = target - finished
    where = describe(url)
    if existing is not None:
        print(f"Resuming study '{spec.name}' in {where}: {finished} finished trials kept.", file=out)
    if to_run <= 0:
        print(f"Study '{spec.name}' already has {finished} finished trials (target {target}); "
              f"pass {option('n_trials', 'N')} to run N more.", file=out)
        return study
    where_run = f" with {workers} workers" if workers > 1 else ""
    where_run += f" on {options.cluster}" if client else ""
    print(f"Running {to_run} trial(s) of '{spec.name}' on {device}{where_run} ({spec.folds}-fold CV of "
          f"{len(dataset.dev)} rows; {len(dataset.test)} rows held out for the final test).", file=out)

    timeout = options.timeout if options.timeout is not None else spec.timeout
    until_converged = (options.stop or spec.stop) == "converged"
    budget = Budget(target, deadline=time.time() + timeout if timeout else None, until_converged=until_converged)
    with tqdm(total=to_run, unit="trial", disable=not options.progress, file=sys.stderr, dynamic_ncols=True) as bar:
        shown = _Progress(bar, finished)
        batch = options.batch or default_batch(spec)
        if workers == 1 and client is None:
            optimize_until(study, make_objective(spec, folds, dataset, candidates.folder_for(url, spec.name)), budget,
                           on_trial=lambda s, t: shown(counts(s)), batch=batch)
        else:
            # On a cluster each Dask worker divides its own machine's cores (threads 0).
            threads = 0 if client is not None else max(1, (os.cpu_count() or 1) // workers)
            jobs = [WorkerJob(str(Path(study_file).resolve()), overrides, url, budget, device, threads, i,
                              *heartbeat, reproducible=options.reproducible, batch=1 if options.reproducible else batch,
                              cwd=os.getcwd())
                    for i in range(workers)]
            prepared, _ = prepare(spec, folds)  # the space as the workers' objectives see it
            launch(jobs, study, budget, on_progress=shown, suggest=prepared.suggest, client=client,
                   grace=heartbeat[1], children=children)
    notes.refresh(study)  # the note now tells what the search chose (the embeddings' evidence)
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

"""Many workers on one study: exact trial totals, heartbeats, and local worker processes.

The database is the coordination point. Every worker (a process here, or a process on
another machine with the same `--storage`) runs `optimize_until`, which keeps the study's
number of finished (complete or pruned) trials at exactly its target:

- Before asking for a trial, a worker counts finished and running trials; if they already
  fill the target it does not ask (it waits while running trials may still fail and be
  retried). Waiting trials (enqueued or retried) are what `ask()` hands out first.
- Two workers can pass that check at the same moment. So after `ask()`, a trial is
  admitted only if fewer than `target` live (complete, pruned, running or waiting) trials
  have a smaller number. Trial numbers are assigned atomically by the storage, so exactly
  one of two racing trials is admitted; the other ends at once as FAIL with
  `fail_reason` "not needed" (rare: it takes two workers asking within milliseconds).
- A worker killed mid-trial stops sending heartbeats; after `grace_period` seconds the
  next worker to start a trial marks it FAIL, and `RetryFailedTrialCallback` queues the
  same configuration again as a waiting trial, which the next free worker runs.

Optuna's `MaxTrialsCallback` stops a worker after its trial finishes, so with N workers a
study can end up to N-1 trials over its target. These checks make the total exact.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import optuna
from optuna.trial import TrialState

LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class NotNeeded(Exception):
    """Raised for a trial that would take the study past its target (ends as FAIL, not retried)."""


@dataclass(frozen=True)
class Budget:
    target: int  # finished trials the study should end with
    deadline: float | None = None  # time.time() after which no trial starts
    poll: float = 0.5  # seconds between checks while other workers' trials run


def counts(study: optuna.Study) -> dict[TrialState, int]:
    found = {state: 0 for state in TrialState}
    for t in study.get_trials(deepcopy=False):
        found[t.state] += 1
    return found


def admit(study: optuna.Study, trial: optuna.Trial, target: int) -> None:
    """Raise `NotNeeded` unless fewer than `target` live trials precede `trial`."""
    before = sum(1 for t in study.get_trials(deepcopy=False, states=LIVE) if t.number < trial.number)
    if before >= target:
        raise NotNeeded(f"not needed: the study reached its target of {target} trials")


def optimize_until(study: optuna.Study, objective: Callable[[optuna.Trial], float], budget: Budget,
                   on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> None:
    """Run trials until the study has `budget.target` finished trials (or the deadline passes)."""
    heartbeat = _has_heartbeat(study)
    rejected = False

    def admitted(trial: optuna.Trial) -> float:
        nonlocal rejected
        try:
            admit(study, trial, budget.target)
        except NotNeeded as e:
            rejected = True
            trial.set_user_attr("fail_reason", str(e))
            raise
        return objective(trial)

    callbacks = [on_trial] if on_trial else []
    while not rejected and (budget.deadline is None or time.time() < budget.deadline):
        if heartbeat:
            optuna.storages.fail_stale_trials(study)  # a dead worker's trial fails, and is retried
        c = counts(study)
        finished = c[TrialState.COMPLETE] + c[TrialState.PRUNED]
        if finished >= budget.target:
            return
        if finished + c[TrialState.RUNNING] >= budget.target:  # waiting trials are work to do: ask() pops them
            if not heartbeat or not c[TrialState.RUNNING]:
                return  # nothing can free a place: the other trials belong to live workers
            time.sleep(budget.poll)  # a running trial may still fail (dead worker) and be retried
            continue
        study.optimize(admitted, n_trials=1, callbacks=callbacks, catch=(NotNeeded, MemoryError))


def _has_heartbeat(study: optuna.Study) -> bool:
    storage = study._storage
    get = getattr(storage, "get_heartbeat_interval", None)
    return bool(get and get())


# --- local worker processes ---------------------------------------------------------------
@dataclass(frozen=True)
class WorkerJob:
    """What a worker process needs: it loads the study file itself (functions do not pickle)."""

    study_file: str
    overrides: dict
    storage: str
    budget: Budget
    device: str
    threads: int
    index: int
    heartbeat_interval: int
    grace_period: int


def worker_main(job: WorkerJob) -> None:
    """Entry point of one worker process."""
    import torch

    from sweeps import _cli
    from sweeps.folds import make_folds
    from sweeps.objective import make_objective
    from sweeps.storage import open_storage

    torch.set_num_threads(job.threads)
    _cli.quiet_optuna()
    try:
        spec, dataset = _cli.load(job.study_file, **job.overrides)
        folds = make_folds(dataset, spec.folds, spec.seed, job.device)
        storage = open_storage(job.storage, create=False, heartbeat_interval=job.heartbeat_interval,
                               grace_period=job.grace_period)
        n_existing = len(storage.get_all_trials(storage.get_study_id_from_name(spec.name), deepcopy=False))
        from sweeps.run import default_pruner, default_sampler

        study = optuna.load_study(study_name=spec.name, storage=storage,
                                  sampler=spec.sampler or default_sampler(spec, n_existing, worker=job.index),
                                  pruner=spec.pruner or default_pruner())
        optimize_until(study, make_objective(spec, folds), job.budget, on_trial=None)
    except KeyboardInterrupt:
        sys.exit(130)


def launch(jobs: list[WorkerJob], study: optuna.Study, budget: Budget,
           on_progress: Callable[[dict], None], out=sys.stderr) -> None:
    """Start one process per job, report progress, and stop them all cleanly on Ctrl+C."""
    context = multiprocessing.get_context("spawn")  # no fork: torch and SQLite handles do not survive it
    processes = [context.Process(target=worker_main, args=(job,), name=f"sweeps-worker-{job.index}")
                 for job in jobs]
    for p in processes:
        p.start()
    reported_dead: set[int] = set()
    try:
        while any(p.is_alive() for p in processes):
            time.sleep(0.5)
            on_progress(counts(study))
            for i, p in enumerate(processes):
                if not p.is_alive() and p.exitcode not in (0, None) and i not in reported_dead:
                    reported_dead.add(i)
                    print(f"\nsweeps: worker {i} (pid {p.pid}) ended with exit code {p.exitcode}; the other "
                          "workers go on, and a trial it left running is retried after its heartbeat "
                          "grace period.", file=out)
        on_progress(counts(study))
    except KeyboardInterrupt:
        for p in processes:  # workers in our process group got the terminal's SIGINT too; others did not
            if p.is_alive():
                os.kill(p.pid, signal.SIGINT)
        for p in processes:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise


def worker_seed(seed: int, n_existing: int, worker: int) -> int:
    """Different sampler seeds for each worker and each resumption, all derived from the study seed."""
    return int(np.random.SeedSequence([seed, n_existing, worker]).generate_state(1)[0])

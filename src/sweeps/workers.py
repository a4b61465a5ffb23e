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
  next worker to start a trial marks it FAIL with its `fail_reason`, and
  `storage.RequeueStaleTrial` queues the same configuration again as a waiting trial,
  which the next free worker runs.
- Local worker processes die with their launcher (SIGTERM from the kernel when it goes,
  however it goes); SIGTERM and Ctrl+C reach every worker, which fails its running trial
  with the reason and exits.

Optuna's `MaxTrialsCallback` stops a worker after its trial finishes, so with N workers a
study can end up to N-1 trials over its target. These checks make the total exact.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState

from sweeps import stop
from sweeps.errors import SweepsError, Terminated, TrialFailed
from sweeps.search import converged

LIVE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.RUNNING, TrialState.WAITING)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class NotNeeded(Exception):
    """Raised for a trial that would take the study past its target (ends as FAIL, not retried)."""


@dataclass(frozen=True)
class Budget:
    target: int  # finished trials the study should end with
    deadline: float | None = None  # time.time() after which no trial starts
    poll: float = 0.5  # seconds between checks while other workers' trials run
    until_converged: bool = False  # also stop when search.converged says so


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


MAX_FAILURES_IN_A_ROW = 5  # then the failures are the configuration's or the machine's, not bad luck


def optimize_until(study: optuna.Study, objective: Callable[[optuna.Trial], float], budget: Budget,
                   on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None) -> None:
    """Run trials until the study has `budget.target` finished trials (or the deadline passes).

    A trial that fails on its own (`TrialFailed`: out of memory) is recorded and the loop goes
    on; `MAX_FAILURES_IN_A_ROW` such failures in a row stop it with a `SweepsError`.
    """
    heartbeat = _has_heartbeat(study)
    rejected = False
    failures: list[str] = []  # reasons of this process's latest trials that failed in a row

    def admitted(trial: optuna.Trial) -> float:
        nonlocal rejected
        try:
            admit(study, trial, budget.target)
        except NotNeeded as e:
            rejected = True
            trial.set_user_attr("fail_reason", str(e))
            raise
        return objective(trial)

    def count_failures(s: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.FAIL and not rejected:
            failures.append(trial.user_attrs.get("fail_reason", "no reason recorded"))
        else:
            failures.clear()

    callbacks = [count_failures] + ([on_trial] if on_trial else [])
    while not rejected and (budget.deadline is None or time.time() < budget.deadline):
        if len(failures) >= MAX_FAILURES_IN_A_ROW:
            raise SweepsError(f"{len(failures)} trials in a row failed, the last because: {failures[-1]}; "
                              "the sweep stops here (finished trials are kept).")
        if heartbeat:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(study)  # a dead worker's trial fails, and is retried
        c = counts(study)
        finished = c[TrialState.COMPLETE] + c[TrialState.PRUNED]
        if finished >= budget.target:
            return
        if budget.until_converged:
            reason = converged(study.get_trials(deepcopy=False))
            if reason:
                if study.user_attrs.get("stop_reason") != reason:
                    study.set_user_attr("stop_reason", reason)
                return
        if finished + c[TrialState.RUNNING] >= budget.target:  # waiting trials are work to do: ask() pops them
            if not heartbeat or not c[TrialState.RUNNING]:
                return  # nothing can free a place: the other trials belong to live workers
            time.sleep(budget.poll)  # a running trial may still fail (dead worker) and be retried
            continue
        with stop.deferred():  # a stop waits for Optuna's writes; training itself stops at once
            study.optimize(admitted, n_trials=1, callbacks=callbacks, catch=(NotNeeded, TrialFailed))


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
    """Entry point of one worker process. Exit codes: 0 done, 2 refused (one line), 130/143 stopped."""
    import torch

    from sweeps import _cli, record
    from sweeps.folds import make_folds
    from sweeps.objective import make_objective
    from sweeps.search import default_pruner, default_sampler
    from sweeps.storage import describe, open_storage

    _die_with_parent()
    torch.set_num_threads(job.threads)
    _cli.quiet_optuna()

    def body() -> int:
        spec, dataset = _cli.load(job.study_file, **job.overrides)
        storage = open_storage(job.storage, create=False, heartbeat_interval=job.heartbeat_interval,
                               grace_period=job.grace_period)
        n_existing = len(storage.get_all_trials(storage.get_study_id_from_name(spec.name), deepcopy=False))
        study = optuna.load_study(study_name=spec.name, storage=storage,
                                  sampler=spec.sampler or default_sampler(spec, n_existing, worker=job.index),
                                  pruner=spec.pruner or default_pruner())
        # This process loaded the data itself: it must be the data, and the held-out rows, that
        # the study was made with, or its trials could train on test rows.
        record.check_same_study(study, spec, dataset, describe(job.storage))
        folds = make_folds(dataset, spec.folds, spec.seed, job.device, scaling=spec.preprocessing)
        optimize_until(study, make_objective(spec, folds), job.budget, on_trial=None)
        return 0

    sys.exit(_cli.guarded(body, prefix=f"worker {job.index}"))


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """SIGTERM this worker when its launcher dies, even by SIGKILL (Linux: prctl; elsewhere: a watch)."""
    parent = os.getppid()
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) == 0
    except (OSError, AttributeError):
        armed = False
    if os.getppid() != parent:  # the launcher died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)
    if armed:
        return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sweeps-parent-watch", daemon=True).start()


def launch(jobs: list[WorkerJob], study: optuna.Study, budget: Budget,
           on_progress: Callable[[dict], None], out=sys.stderr) -> None:
    """Start one process per job, report progress, and stop them all on Ctrl+C or SIGTERM.

    Raises `SweepsError` when workers failed and the study did not reach its target.
    """
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
    except KeyboardInterrupt as interrupt:
        # Workers in our process group got the terminal's SIGINT too; others did not.
        signum = signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT
        for p in processes:
            if p.is_alive():
                os.kill(p.pid, signum)
        for p in processes:
            p.join(timeout=30)
            if p.is_alive():
                p.terminate()
        raise
    failed = [p.exitcode for p in processes if p.exitcode != 0]
    c = counts(study)
    if failed and c[TrialState.COMPLETE] + c[TrialState.PRUNED] < budget.target:
        raise SweepsError(f"{len(failed)} of {len(processes)} workers failed (exit codes {failed}; their "
                          "messages are above) and the study is short of its target; finished trials are "
                          "kept, fix the cause and rerun to resume.")

"""`python -m sweeps.worker`: one worker process of a sweep, started by the launcher
(`--workers N`, `--cluster`) with its job as JSON on standard input. Not a command for people:
on another machine, run `python -m sweeps.run` with the same `--storage` instead.

Exit codes: 0 done, 2 refused (one line), 130/143 stopped.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time

import optuna
import torch

from sweeps import _args, _cli
from sweeps.data.cache import cached_folds
from sweeps.store import candidates, record
from sweeps.store.storage import describe, open_storage
from sweeps.sweep.children import LAUNCHER_PID
from sweeps.sweep.objective import make_objective
from sweeps.sweep.search import default_pruner, default_sampler
from sweeps.sweep.workers import WorkerJob, optimize_until, round_tasks, serve


def worker_main(job: WorkerJob) -> None:
    """Entry point of one worker process. Exit codes: 0 done, 2 refused (one line), 130/143 stopped."""
    torch.set_num_threads(job.threads or 1)
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
        dataset = record.check_same_study(study, spec, dataset, describe(job.storage))
        folds = cached_folds(dataset, spec.folds, spec.seed, job.device, scaling=spec.preprocessing)
        objective = make_objective(spec, folds, dataset, candidates.folder_for(job.storage, spec.name))
        if job.reproducible:
            serve(study, objective, round_tasks(job.rounds))
        else:
            optimize_until(study, objective, job.budget, on_trial=None, batch=job.batch)
        return 0

    _args.leave(_cli.guarded(body, prefix=f"worker {job.index}"))


_PR_SET_PDEATHSIG = 1


def die_with_launcher() -> None:
    """SIGTERM this worker when the launcher that started it dies, even by SIGKILL (Linux: prctl;
    elsewhere: a watch). Armed before the job is read: a launcher killed while this worker was
    still importing or reading its job must not leave it running the whole study alone."""
    launcher = int(os.environ.get(LAUNCHER_PID) or os.getppid())
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        armed = libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM) == 0
    except (OSError, AttributeError):
        armed = False
    # The launcher died before prctl took effect: this process was already handed to another
    # parent, whose death prctl now watches instead. Compare with the pid the launcher gave.
    if os.getppid() != launcher:
        os.kill(os.getpid(), signal.SIGTERM)
    if armed:
        return

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(1.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="sweeps-parent-watch", daemon=True).start()


if __name__ == "__main__":
    # A process that ignores SIGINT (a shell's background job, a process pool) passes the
    # ignoring on through exec: the supervisor's relayed SIGINT must stop this worker, so take
    # the default back before `stop.install`.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    die_with_launcher()
    job = sys.stdin.read()
    if not job.strip():  # started early and never given a job (the launcher stopped first): nothing to do
        _args.leave(0)
    worker_main(WorkerJob.from_json(job))

"""Many workers on one study: exact trial totals, heartbeats, and the worker process itself.

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
- A worker process (`python -m sweeps.worker`, started by `sweep.launcher` on this machine
  or on a Dask cluster) dies with the process that started it (SIGTERM from the kernel
  when that goes, however it goes); SIGTERM and Ctrl+C reach every worker, which fails its
  running trial with the reason and exits.

Optuna's `MaxTrialsCallback` stops a worker after its trial finishes, so with N workers a
study can end up to N-1 trials over its target. These checks make the total exact.
"""

from __future__ import annotations

import json
import queue
import secrets
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.managers import BaseManager

import optuna
from optuna.trial import TrialState

from sweeps.store import internals, record
from sweeps.sweep import stop
from sweeps.errors import FinishedElsewhere, SweepsError, TrialFailed
from sweeps.sweep.search import converged
from sweeps.sweep.slots import NotAdmitted, Slots

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
    """The study's trials per state (counted by the database where there is one: reading every
    trial to count them is a sweep's cost, several times per trial)."""
    found = {state: 0 for state in TrialState}
    counted = internals.count_trials(study)
    if counted is not None:
        return found | counted
    for t in study.get_trials(deepcopy=False):
        found[t.state] += 1
    return found


def admit(study: optuna.Study, trial: optuna.Trial, target: int) -> None:
    """Raise `NotNeeded` unless fewer than `target` live trials precede `trial`."""
    counted = internals.count_trials(study, LIVE, below=trial.number)
    before = sum(counted.values()) if counted is not None else \
        sum(1 for t in study.get_trials(deepcopy=False, states=LIVE) if t.number < trial.number)
    if before >= target:
        raise NotNeeded(f"not needed: the study reached its target of {target} trials")


MAX_FAILURES_IN_A_ROW = 5  # then the failures are the configuration's or the machine's, not bad luck


def optimize_until(study: optuna.Study, objective: Callable[[optuna.Trial], float], budget: Budget,
                   on_trial: Callable[[optuna.Study, optuna.trial.FrozenTrial], None] | None = None,
                   batch: int = 1) -> None:
    """Run trials until the study has `budget.target` finished trials (or the deadline passes).

    A trial that fails on its own (`TrialFailed`: out of memory) is recorded and the loop goes
    on; `MAX_FAILURES_IN_A_ROW` such failures in a row stop it with a `SweepsError`. With
    `batch` > 1 (and a `Trainer` objective), up to that many trials train at once in shared
    stacks, each slot refilled as soon as its trial ends (`slots.Slots`).
    """
    heartbeat = internals.has_heartbeat(study)
    rejected = done = False
    failures: list[str] = []  # reasons of this process's latest trials that failed in a row

    def count_failures(s: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.FAIL:
            failures.append(trial.user_attrs.get("fail_reason", "no reason recorded"))
        else:
            failures.clear()

    callbacks = [count_failures] + ([on_trial] if on_trial else [])
    slots = Slots(study, objective, lambda s: _admitted(s, budget.target), callbacks) \
        if batch > 1 and hasattr(objective, "training_failed") else None
    try:
        while True:
            if slots is not None and slots.live >= batch:  # every slot busy: nothing to ask or count yet
                slots.epoch()
                continue
            if len(failures) >= MAX_FAILURES_IN_A_ROW:
                raise SweepsError(f"{len(failures)} trials in a row failed, the last because: {failures[-1]}; "
                                  "the sweep stops here (finished trials are kept).")
            if heartbeat:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(study)  # a dead worker's trial fails, and is retried
            closed = rejected or done or (budget.deadline is not None and time.time() >= budget.deadline)
            room, running = (None, 0) if closed else _room(study, budget)
            done = room is None  # the target is reached or the study converged: no more trials start
            if slots is not None:
                if room and slots.live < batch:
                    rejected = slots.fill(min(room, batch - slots.live))
                if slots.live:  # its trials train on, even once the target or the deadline allow no more
                    slots.epoch()
                    continue
            if room is None:
                return
            if room == 0:
                # Judged on the same count as the room: a running trial that fails meanwhile (a dead
                # worker's) is queued again, and this worker must then still be here to run it.
                if not (heartbeat and running):
                    return  # nothing can free a place: the other trials belong to live workers
                time.sleep(budget.poll)  # a running trial may still fail (dead worker) and be retried
            elif slots is None:
                with stop.deferred():  # a stop waits for Optuna's writes; training itself stops at once
                    rejected = _run_one(study, objective, budget, callbacks)
    except BaseException as e:
        if slots is not None:
            slots.fail_all(e)
        raise


def _room(study: optuna.Study, budget: Budget) -> tuple[int | None, int]:
    """How many more trials may start now (None when the study is done: its target reached, or
    converged; 0 while running trials fill the target), and how many trials are running."""
    c = counts(study)
    finished, running = c[TrialState.COMPLETE] + c[TrialState.PRUNED], c[TrialState.RUNNING]
    if finished >= budget.target:
        return None, running
    if budget.until_converged:
        reason = converged(study.get_trials(deepcopy=False))
        if reason:
            record.write_stop_reason(study, reason)
            return None, running
    # waiting trials are work to do: ask() pops them
    return max(0, budget.target - finished - running), running


def _admitted(study: optuna.Study, target: int) -> optuna.Trial:
    """A newly asked trial, or `NotAdmitted` (told FAIL, "not needed") when the study is full."""
    trial = ask(study)
    try:
        admit(study, trial, target)
    except NotNeeded as e:
        record.write_fail_reason(trial, str(e))
        study.tell(trial, state=TrialState.FAIL)
        raise NotAdmitted(str(e)) from None
    return trial


def ask(study: optuna.Study) -> optuna.Trial:
    """`study.ask()` outside `study.optimize`: sweeps starts each trial's heartbeat itself
    (`get_heartbeat_thread`), so Optuna's warning that it will not is not for us."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        return study.ask()


def _run_one(study: optuna.Study, objective: Callable[[optuna.Trial], float], budget: Budget,
             callbacks: list) -> bool:
    """Ask one trial, run `objective` with heartbeats, tell its outcome; True when it was not admitted.

    Optuna's `study.optimize` would do the same, but it tells a trial whatever happened to it
    meanwhile: one finished from the dashboard while it trained made it raise. Here such a
    trial (`FinishedElsewhere`) is left as it was finished, in one line, and the sweep goes on.
    """
    trial = ask(study)
    try:
        admit(study, trial, budget.target)
    except NotNeeded as e:
        record.write_fail_reason(trial, str(e))
        study.tell(trial, state=TrialState.FAIL)
        return True
    value, state = None, TrialState.FAIL
    with internals.heartbeat(study, trial):
        try:
            value, state = objective(trial), TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except TrialFailed:
            pass
        except FinishedElsewhere as e:
            e.say()
            state = None
        except BaseException:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
    frozen = study.tell(trial, value, state=state, skip_if_finished=True) if state is not None \
        else internals.frozen(study, trial)
    for callback in callbacks:
        callback(study, frozen)
    return False


# --- reproducible parallel sweeps: fixed rounds --------------------------------------------------
class Rounds:
    """Ask N trials at a time, here in the launcher; workers only train them; then the next N.

    Optuna's parallel sweeps are not reproducible (optuna#3056): which trials the sampler
    has seen, and which a pruner compares with, depend on timing. In rounds, the sampler asks
    each round's trials in a fixed order after every earlier round has finished (TPE's
    constant liar sees the round's own earlier trials as running, the same every time), the
    training seed is the trial number's, and a trial's pruner compares it only with trials
    of earlier rounds (`RoundPruner`). The same study file and seed then give the same trials
    and values whatever the timing. The cost: each round waits for its slowest trial.
    """

    def __init__(self, study: optuna.Study, suggest: Callable[[optuna.Trial], object], budget: Budget,
                 size: int, tasks) -> None:
        self.study, self.suggest, self.budget, self.size, self.tasks = study, suggest, budget, size, tasks
        self.current: list[int] = []  # trial ids of the round in flight
        self.finished_rounds = False

    def step(self, workers: int) -> None:
        if self.finished_rounds:
            return
        if self.current:
            if internals.has_heartbeat(self.study):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(self.study)  # a dead worker's trial
            states = {internals.trial_id(t): t.state for t in self.study.get_trials(deepcopy=False)}
            if any(states.get(i) == TrialState.RUNNING for i in self.current):
                return
        c = counts(self.study)
        remaining = self.budget.target - c[TrialState.COMPLETE] - c[TrialState.PRUNED]
        deadline = self.budget.deadline is not None and time.time() >= self.budget.deadline
        reason = converged(self.study.get_trials(deepcopy=False)) if self.budget.until_converged else None
        if reason:
            record.write_stop_reason(self.study, reason)
        if remaining <= 0 or deadline or reason or workers == 0:
            self.finished_rounds = True
            for _ in range(self.size):
                self.tasks.put(None)  # each worker's signal to finish
            return
        trials = []
        with stop.deferred():
            for _ in range(min(self.size, remaining)):
                trial = ask(self.study)
                self.suggest(trial)  # the configuration is drawn here, in order
                trials.append(trial)
        first = trials[0].number
        self.current = [internals.trial_id(t) for t in trials]
        for trial in trials:
            self.tasks.put((internals.trial_id(trial), first))


class _TrialsBefore:
    """The study as it was when a round started: `get_trials` shows only earlier trials."""

    def __init__(self, study: optuna.Study, number: int) -> None:
        self._study, self._number = study, number

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        return [t for t in self._study.get_trials(deepcopy=deepcopy, states=states) if t.number < self._number]

    @property
    def trials(self) -> list:
        return self.get_trials()

    def __getattr__(self, name: str):
        return getattr(self._study, name)


class RoundPruner(optuna.pruners.BasePruner):
    """`inner`, judging a trial only against trials numbered below `before` (earlier rounds)."""

    def __init__(self, inner: optuna.pruners.BasePruner, before: int) -> None:
        self.inner, self.before = inner, before
        self.last_reason = self.last_pruner = None

    def prune(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> bool:
        pruned = self.inner.prune(_TrialsBefore(study, self.before), trial)
        self.last_reason = getattr(self.inner, "last_reason", None)
        self.last_pruner = getattr(self.inner, "last_pruner", None) or type(self.inner).__name__
        return pruned


def serve(study: optuna.Study, objective: Callable[[optuna.Trial], float], tasks) -> None:
    """A reproducible worker: train the trials the launcher hands out until it says stop."""
    base = study.pruner
    while True:
        task = tasks.get()
        if task is None:
            return
        trial_id, before = task
        study.pruner = RoundPruner(base, before)
        run_trial(study, trial_id, objective)


def run_trial(study: optuna.Study, trial_id: int, objective: Callable[[optuna.Trial], float]) -> None:
    """Run `objective` on a trial asked elsewhere, with heartbeats, and tell its outcome."""
    trial = optuna.trial.Trial(study, trial_id)
    with stop.deferred(), internals.heartbeat(study, trial_id):
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED, skip_if_finished=True)
            return
        except TrialFailed:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            return
        except FinishedElsewhere as e:
            e.say()
            return
        except BaseException:
            study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
            raise
        study.tell(trial, value, skip_if_finished=True)


# --- worker processes ------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerJob:
    """What a worker process needs: it loads the study file itself (functions do not pickle).

    Sent to the worker as JSON on its standard input (`python -m sweeps.workers`): plain
    values only, and the storage URL (which may hold a password) never shows in `ps`.
    """

    study_file: str
    overrides: dict
    storage: str
    budget: Budget
    device: str
    threads: int  # torch threads; 0: this machine's cores shared by the Dask worker's threads
    index: int
    heartbeat_interval: int
    grace_period: int
    reproducible: bool = False  # train the trials the launcher hands out (`Rounds`), ask none
    batch: int = 1  # trials asked at a time and trained in one stack
    cwd: str = "."  # where the study file's relative paths (data, storage/) resolve
    rounds: tuple | None = None  # reproducible: (host, port, authkey hex) of the launcher's task queue

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> WorkerJob:
        fields = json.loads(text)
        fields["budget"] = Budget(**fields["budget"])
        fields["rounds"] = tuple(fields["rounds"]) if fields.get("rounds") else None
        return cls(**fields)


def round_tasks(address: tuple):
    """The launcher's task queue (`Rounds.tasks`), as a worker process sees it."""
    host, port, authkey = address
    manager = _rounds_manager(lambda: None)(address=(host, port), authkey=bytes.fromhex(authkey))
    manager.connect()
    return manager.tasks()


def serve_round_tasks() -> tuple[queue.Queue, tuple]:
    """Serve a task queue for `Rounds` on this machine: (the queue, its address for the jobs).

    The queue is reached over a local socket with an HMAC-authenticated handshake (a random
    key that only the jobs carry); it serves until the launcher exits.
    """
    tasks: queue.Queue = queue.Queue()
    authkey = secrets.token_bytes(16)
    server = _rounds_manager(lambda: tasks)(address=("127.0.0.1", 0), authkey=authkey).get_server()
    threading.Thread(target=server.serve_forever, name="sweeps-rounds", daemon=True).start()
    host, port = server.address
    return tasks, (host, port, authkey.hex())


def _rounds_manager(tasks: Callable[[], object]) -> type[BaseManager]:
    manager = type("RoundsManager", (BaseManager,), {})  # a class of its own: registrations are per class
    manager.register("tasks", callable=tasks)
    return manager

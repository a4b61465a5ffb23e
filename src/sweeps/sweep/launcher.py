"""Worker processes through joblib: threads that watch them here, its Dask backend on a cluster.

`--workers N` runs N worker slots as joblib tasks in threads of the launcher; `--cluster
dask://HOST:PORT` runs the same tasks on an existing Dask cluster through joblib's Dask
backend. Each task, `supervise`, hands its job to a worker proper, a child process (`python
-m sweeps.worker`), and watches it until it ends. A child, and not the task itself, because:

- one worker's death (out of memory, SIGKILL, a lost machine) must not stop the others: a
  dead child is only an exit code for its task to report (Dask reruns a task whose worker
  was lost);
- Ctrl+C and SIGTERM stop training through signals in a main thread (`sweeps.stop`), and a
  task runs in a thread;
- torch's thread count is a setting of the whole process.

On this machine the children are started before the launcher loads anything
(`children.WaitingWorkers`), so their imports overlap its own; watching a child needs no
process of its own, so the tasks are threads. The launcher's stop reaches every task through
a stop channel (`LocalStop`, a value its threads share; a Dask `Variable` on a cluster); each
task relays it to its child once, as the same signal, and the child fails its running trial
with the reason, as a single process does.
"""

from __future__ import annotations

import collections
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from typing import TextIO
from dataclasses import replace
from urllib.parse import urlparse

import optuna
from optuna.trial import TrialState

from sweeps.errors import STDERR, SweepsError, Terminated
from sweeps.store import internals
from sweeps.sweep.children import WaitingWorkers, start_worker
from sweeps.sweep.workers import Budget, Rounds, WorkerJob, counts, serve_round_tasks

POLL = 0.2  # seconds between a task's looks at its child and at the stop channel
LOOPBACK = ("127.0.0.1", "localhost", "::1")


# --- stop channels -------------------------------------------------------------------------
class LocalStop:
    """The launcher's stop for tasks in its own threads: the signal's number, once requested."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def request(self, signum: int) -> None:
        self.signum = int(signum)

    def requested(self) -> int | None:
        return self.signum


class DaskStop:
    """The launcher's stop for tasks on a Dask cluster: a named Dask `Variable`."""

    def __init__(self, name: str, client=None) -> None:
        self.name, self.client = name, client

    def request(self, signum: int) -> None:
        from distributed import Variable

        try:  # bounded: a stop must stop the launcher even when the scheduler no longer answers
            Variable(self.name, client=self.client).set(int(signum), timeout="5 s")
        except Exception:
            pass

    def __getstate__(self) -> dict:
        return {"name": self.name, "client": None}  # tasks find their worker's own client

    def requested(self) -> int | None:
        from distributed import Variable

        try:
            return int(Variable(self.name).get(timeout=0))
        except Exception:  # not set yet (a timeout), or the scheduler is gone: nothing to relay
            return None


# --- one worker slot -------------------------------------------------------------------------
def supervise(job: WorkerJob, channel: LocalStop | DaskStop,
              child: subprocess.Popen | None = None) -> tuple[int, int, int, str]:
    """Give one worker its job and watch it until it ends, relaying the launcher's stop.

    `child`: a worker started early (`WaitingWorkers`); None: one is started here (on a Dask
    worker's machine). Returns (job index, child pid, exit code, its last lines of stderr);
    the exit code is negative for a child killed by a signal (-9: SIGKILL), as `subprocess`
    reports it.
    """
    if not job.threads:
        job = replace(job, threads=_cluster_threads())
    if child is None:
        child = start_worker(job.cwd)
    tail: collections.deque[str] = collections.deque(maxlen=20)

    def relay_stderr() -> None:
        for line in child.stderr:
            sys.stderr.write(line)
            sys.stderr.flush()
            tail.append(line)

    reader = threading.Thread(target=relay_stderr, name="sweeps-worker-stderr", daemon=True)
    reader.start()
    try:
        child.stdin.write(job.to_json())
        child.stdin.close()
    except OSError:  # it died before reading its job: its exit code and last lines say why
        pass
    relayed = False
    try:
        while child.poll() is None:
            signum = channel.requested()
            if signum is not None and not relayed:
                child.send_signal(signum)
                relayed = True
            time.sleep(POLL)
    finally:
        if child.poll() is None:  # this task is being torn down: the child must not outlive it
            child.terminate()
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
    reader.join(timeout=5)
    return job.index, child.pid, child.returncode, "".join(tail)


def _cluster_threads() -> int:
    """Torch threads for a worker on a Dask worker: its machine's cores over the Dask worker's threads."""
    try:
        from distributed import get_worker

        tasks = get_worker().state.nthreads
    except Exception:
        tasks = 1
    return max(1, (os.cpu_count() or 1) // max(1, tasks))


# --- the launcher ------------------------------------------------------------------------------
HANDSHAKE_SECONDS = 10.0  # a Dask scheduler answers its handshake in milliseconds; anything slower is not one


def connect(cluster: str, timeout: float = HANDSHAKE_SECONDS):
    """A Dask client for `dask://HOST:PORT`; one clear line when there is no such scheduler.

    The handshake is bounded: distributed's own `Client(timeout=)` waits forever on a server that
    accepts the connection and says nothing, and misreads another protocol's answer (an HTTP
    server's) as a frame of exabytes. So the client is made in a thread given `timeout` seconds,
    and any failure of it is "not a Dask scheduler", in one line.
    """
    address = scheduler_address(cluster)
    try:
        from distributed import Client
    except ImportError:
        raise SweepsError("--cluster needs Dask's distributed package: pip install -e '.[dask]'.") from None
    host, port = address[len("tcp://"):].rsplit(":", 1)
    try:  # nothing listening answers at once; only a listener is given the handshake's time
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise SweepsError(f"--cluster {cluster}: no Dask scheduler answered at {address} ({e.strerror or e}); "
                          "start one with `dask scheduler` (and workers with `dask worker ADDRESS`), or fix the "
                          "address.") from None
    made: list = []

    def handshake() -> None:
        try:
            made.append(Client(address, timeout=f"{timeout}s"))
        except BaseException as e:  # noqa: BLE001 - whatever it is, it is reported below in one line
            made.append(e)

    thread = threading.Thread(target=handshake, name="sweeps-dask-handshake", daemon=True)
    thread.start()
    thread.join(timeout + 2.0)
    fix = ("start one with `dask scheduler` (and workers with `dask worker ADDRESS`), or fix the address")
    if not made:
        raise SweepsError(f"--cluster {cluster}: something at {address} accepted the connection but did not answer "
                          f"as a Dask scheduler within {timeout:g} s; {fix}.")
    if isinstance(made[0], (OSError, TimeoutError)):
        raise SweepsError(f"--cluster {cluster}: no Dask scheduler answered at {address} ({made[0]}); {fix}.")
    if isinstance(made[0], BaseException):
        raise SweepsError(f"--cluster {cluster}: what answered at {address} is not a Dask scheduler "
                          f"({type(made[0]).__name__}); {fix}.")
    return made[0]


def scheduler_address(cluster: str) -> str:
    """`tcp://HOST:PORT` of `dask://HOST:PORT`; one line for anything else (no traceback)."""
    if not isinstance(cluster, str):
        raise SweepsError(f"--cluster must look like dask://HOST:PORT (a Dask scheduler), got {cluster!r}.")
    try:
        parsed = urlparse(cluster)
        host, port = parsed.hostname, parsed.port
    except ValueError as e:  # a port beyond 65535 or not a number, an unclosed [IPv6 bracket
        raise SweepsError(f"--cluster {cluster!r}: {e}; it must look like dask://HOST:PORT.") from None
    if parsed.scheme != "dask" or not host or not port:
        raise SweepsError(f"--cluster must look like dask://HOST:PORT (a Dask scheduler), got {cluster!r}.")
    return f"tcp://[{host}]:{port}" if ":" in host else f"tcp://{host}:{port}"


def is_remote(cluster: str) -> bool:
    return urlparse(cluster).hostname not in LOOPBACK


STOP_WAIT = 60.0  # seconds a stop waits for the workers to fail their running trials and exit


def launch(jobs: list[WorkerJob], study: optuna.Study, budget: Budget,
           on_progress: Callable[[dict], None], out: TextIO = STDERR,
           suggest: Callable[[optuna.Trial], object] | None = None, client=None, grace: float = 60.0,
           children: WaitingWorkers | None = None) -> None:
    """Run the jobs as joblib tasks, report progress, and stop them all on Ctrl+C or SIGTERM.

    `client`: a Dask client (`connect`) to run them on its cluster; None: worker processes on
    this machine: `children` if they were started early, else started here. With
    reproducible jobs, `suggest` draws each trial's configuration here, in rounds (`Rounds`).
    While it waits, the launcher fails the trials of workers that stopped
    sending heartbeats for `grace` seconds (each is queued again), and a cluster left without
    any worker for that long ends the run with one line. Raises `SweepsError` when workers
    failed and the study did not reach its target.
    """
    rounds = None
    if jobs and jobs[0].reproducible:
        queue, address = serve_round_tasks()
        jobs = [replace(job, rounds=address) for job in jobs]
        rounds = Rounds(study, suggest, budget, len(jobs), queue)
    with WaitingWorkers(0) if children is None else children as started:
        if client is not None:
            channel, tasks = DaskStop(f"sweeps-stop-{uuid.uuid4().hex}", client), [(job, None) for job in jobs]
        else:  # taken here, in the launcher's main thread (see children.start_worker)
            channel, tasks = LocalStop(), [(job, started.take(job.cwd)) for job in jobs]
        outcomes: list = []  # what the tasks returned, appended by the thread that runs them
        # An Event, not Thread.join, to wait on the runner: a Ctrl+C that interrupts
        # Thread.join(timeout) makes CPython 3.11 mark the still-running thread as stopped
        # (bpo-45274's cleanup), and the launcher would then stop waiting for its workers.
        done = threading.Event()
        runner = threading.Thread(target=_run_tasks, args=(tasks, channel, client is not None, outcomes, done),
                                  name="sweeps-launcher", daemon=True)
        ended: list[int] = []  # exit codes of the tasks that ended, in the order they did
        watch = _Watch(study, grace, client)
        try:
            runner.start()
            while not done.is_set() or len(outcomes) > len(ended):
                if rounds is not None:
                    rounds.step(workers=len(jobs) - len(ended))
                _report(outcomes, ended, out, remote=client is not None)
                on_progress(counts(study))
                watch.check()
                done.wait(timeout=0.5)
            on_progress(counts(study))
        except KeyboardInterrupt as interrupt:
            channel.request(signal.SIGTERM if isinstance(interrupt, Terminated) else signal.SIGINT)
            # Each worker fails its running trial with the reason, then exits; a cluster without
            # workers has nothing to wait for.
            done.wait(timeout=0 if watch.workerless else STOP_WAIT)
            raise
        _report(outcomes, ended, out, remote=client is not None)
    failed = [code for code in ended if code != 0]
    c = counts(study)
    if failed and c[TrialState.COMPLETE] + c[TrialState.PRUNED] < budget.target:
        raise SweepsError(f"{len(failed)} of {len(jobs)} workers failed (exit codes {failed}; their "
                          "messages are above) and the study is short of its target; finished trials are "
                          "kept, fix the cause and rerun to resume.")


class _Watch:
    """What the launcher looks after while its workers run.

    - Trials whose worker stopped sending heartbeats (killed, out of memory, its machine
      lost) are failed with that reason and queued again, even when no other worker is left
      to notice (`optuna.storages.fail_stale_trials`, every few seconds).
    - A Dask cluster that has had no worker for `grace` seconds cannot finish anything: Dask
      would wait for a worker forever. That ends the run, in one line.
    """

    EVERY = 2.0  # seconds between looks

    def __init__(self, study: optuna.Study, grace: float, client=None) -> None:
        self.study, self.grace, self.client = study, grace, client
        self.last = 0.0
        self.empty_since: float | None = None

    @property
    def workerless(self) -> bool:
        return self.empty_since is not None

    def check(self) -> None:
        now = time.monotonic()
        if now - self.last < self.EVERY:
            return
        self.last = now
        self._fail_stale()
        if self.client is None:
            return
        try:
            workers = len(self.client.scheduler_info(n_workers=-1).get("workers", {}))
        except Exception:  # the scheduler itself is gone: as good as no worker
            workers = 0
        if workers:
            self.empty_since = None
            return
        self.empty_since = self.empty_since or now
        if now - self.empty_since >= self.grace:
            self._fail_stale()
            raise SweepsError(
                f"the Dask cluster has had no worker for {self.grace:g} s (--grace-period), so no trial can run; "
                "the trials its workers were running were failed with that reason and queued again; finished "
                "trials are kept; start Dask workers (dask worker ADDRESS) and rerun to resume.")

    def _fail_stale(self) -> None:
        if internals.has_heartbeat(self.study):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                optuna.storages.fail_stale_trials(self.study)


def _run_tasks(tasks: list[tuple[WorkerJob, subprocess.Popen | None]], channel, on_dask: bool, outcomes: list,
               done: threading.Event) -> None:
    import joblib

    try:
        with joblib.parallel_config(backend="dask" if on_dask else "threading", n_jobs=len(tasks)):
            calls = (joblib.delayed(supervise)(job, channel, child) for job, child in tasks)
            for outcome in joblib.Parallel(return_as="generator_unordered")(calls):
                outcomes.append(outcome)
    except BaseException as e:  # the backend itself failed (a lost scheduler, a broken pool)
        outcomes.append(e)
    finally:
        done.set()


def _report(outcomes: list, ended: list[int], out, remote: bool) -> None:
    for outcome in outcomes[len(ended):]:
        if isinstance(outcome, BaseException):
            ended.append(1)
            print(f"\nsweeps: the worker tasks stopped: {type(outcome).__name__}: {outcome}; finished trials "
                  "are kept.", file=out)
            continue
        index, pid, code, tail = outcome
        ended.append(code)
        if code != 0:
            where = "" if not remote else f"; its last lines:\n{tail.rstrip()}"
            print(f"\nsweeps: worker {index} (pid {pid}) ended with exit code {code}; the other workers go on, "
                  f"and a trial it left running is retried after its heartbeat grace period{where}", file=out)

"""Many workers on one study: exact totals, no lost or doubled trials, dead workers retried.

PostgreSQL tests use SWEEPS_TEST_POSTGRES_URL (default: this machine's server,
postgresql://postgres@127.0.0.1:5432/test); they skip only when it is unreachable outside CI.
"""

from __future__ import annotations

import collections
import datetime
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from sweeps.sweep.workers import NotNeeded, admit

from conftest import default_signals, slowness

STUDY = """
from sklearn.datasets import load_digits
from sweeps import Study, Space
study = Study(name={name!r}, task="classification", data=lambda: load_digits(return_X_y=True),
              space=Space(depth=(1, 2), width=(16, 64), lr=(1e-3, 1e-2)),
              folds=3, max_epochs={epochs}, patience={patience}, n_trials={n_trials},
              pruner=__import__("optuna").pruners.NopPruner())
"""


def write_study(tmp_path: Path, name: str, n_trials: int, epochs: int = 4, patience: int = 3) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(STUDY.format(name=name, n_trials=n_trials, epochs=epochs, patience=patience))
    return str(path)


def sweeps_run(*args, cwd, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "sweeps.run", *args, "--no-progress"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_signals, **kwargs)


def states(name: str, url: str) -> collections.Counter:
    return collections.Counter(t.state for t in optuna.load_study(study_name=name, storage=url).trials)


def assert_exact(name: str, url: str, target: int) -> list:
    trials = optuna.load_study(study_name=name, storage=url).trials
    finished = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == target
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert len({t.number for t in trials}) == len(trials)
    # No configuration was trained twice, except a retry of a trial whose worker died.
    configs = collections.Counter(tuple(sorted(t.params.items())) for t in finished)
    assert max(configs.values()) == 1
    return trials


def test_admission_lets_exactly_one_of_two_racing_trials_in():
    study = optuna.create_study()
    study.tell(study.ask(), 1.0)
    first, second = study.ask(), study.ask()  # two workers asked at the same moment
    admit(study, first, target=2)
    with pytest.raises(NotNeeded, match="not needed: the study reached its target of 2 trials"):
        admit(study, second, target=2)


@pytest.mark.parametrize("batch", [[], ["--batch", "4"]], ids=["one-at-a-time", "batches-of-4"])
def test_two_workers_on_sqlite_exact_count_and_no_lock_error(tmp_path, batch):
    path = write_study(tmp_path, "sqlite-workers", n_trials=10)  # batches of 4: the last one is partial
    process = sweeps_run(path, "--workers", "2", *batch, cwd=tmp_path)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    assert "locked" not in err.lower() and "Traceback" not in err
    assert_exact("sqlite-workers", f"sqlite:///{tmp_path / 'storage' / 'sqlite-workers.db'}", 10)
    assert "with 2 workers" in out


def test_three_workers_on_postgresql_total_is_exact(tmp_path, postgres):
    name = f"pg-{uuid.uuid4().hex[:8]}"
    path = write_study(tmp_path, name, n_trials=12)
    try:
        process = sweeps_run(path, "--workers", "3", "--storage", postgres, cwd=tmp_path)
        out, err = process.communicate(timeout=400)
        assert process.returncode == 0, err
        trials = assert_exact(name, postgres, 12)
        assert all(t.state != TrialState.FAIL or "not needed" in t.user_attrs.get("fail_reason", "")
                   for t in trials)
    finally:
        optuna.delete_study(study_name=name, storage=postgres)


def running_worker_after(name: str, url: str, completed: int, timeout: float = 240) -> tuple[list[int], int]:
    """Once `completed` trials are complete and one has just started (within the last half
    second): (the complete trials' numbers, the pid of the worker process running it). A trial
    further along could finish between this read and the caller's kill (seen once under load):
    there would then be no trial to fail. Its age is its start time: its epochs are no measure,
    as a running trial's are written every 2 s (`record.EpochValues`)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.3)
        if url.startswith("sqlite:///") and not Path(url[len("sqlite:///"):]).exists():
            continue  # not made yet: opening it here would race sweeps to create its tables
        try:
            trials = optuna.load_study(study_name=name, storage=url).trials
        except (KeyError, sqlalchemy.exc.SQLAlchemyError):  # the study or its tables are being made
            continue
        done = [t.number for t in trials if t.state == TrialState.COMPLETE]
        now = datetime.datetime.now()
        running = [t for t in trials if t.state == TrialState.RUNNING and "worker" in t.user_attrs
                   and (now - t.datetime_start).total_seconds() < 0.5]
        if len(done) >= completed and running:
            return done, int(running[-1].user_attrs["worker"].rsplit(":", 1)[1])
    raise AssertionError("never saw a running trial to kill")


def worker_pids(launcher: int) -> list[int]:
    """The worker processes (`python -m sweeps.worker`) the launcher started, however deep."""
    parents, commands = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            commands[int(stat.parent.name)] = (stat.parent / "cmdline").read_bytes()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])

    def descends(pid: int) -> bool:
        while pid > 1:
            pid = parents.get(pid, 0)
            if pid == launcher:
                return True
        return False

    return [pid for pid, cmd in commands.items() if b"sweeps.worker" in cmd and descends(pid)]


def test_a_sigkilled_worker_is_failed_by_heartbeat_and_retried(tmp_path, postgres):
    name = f"pg-kill-{uuid.uuid4().hex[:8]}"
    # Trials of 1-3 s (400 epochs, no early stop): the kill lands mid-trial, and ten trials
    # remain, so the heartbeat check (4 s) fails the dead one before the others reach the target
    path = write_study(tmp_path, name, n_trials=13, epochs=400, patience=400)
    try:
        process = sweeps_run(path, "--workers", "3", "--storage", postgres, "--heartbeat-interval", "1",
                             "--grace-period", "4", cwd=tmp_path)
        _, victim = running_worker_after(name, postgres, completed=3)
        os.kill(victim, signal.SIGKILL)  # the process of a running trial: killed mid-trial
        out, err = process.communicate(timeout=400)
        assert process.returncode == 0, err
        assert f"pid {victim}) ended with exit code -9" in err
        trials = assert_exact(name, postgres, 13)
        killed = [t for t in trials if t.state == TrialState.FAIL
                  and not t.user_attrs.get("fail_reason", "").startswith("not needed")]
        assert len(killed) == 1  # failed by the heartbeat check (the worker could not), with the reason
        assert "sent no heartbeat for 4 s" in killed[0].user_attrs["fail_reason"]
        retried = [t for t in trials if t.system_attrs.get("failed_trial") == killed[0].number]
        # The retry repeats the configuration (all of it that was drawn: a kill can land mid-suggest).
        assert len(retried) == 1 and {k: retried[0].params[k] for k in killed[0].params} == killed[0].params
        assert retried[0].state in (TrialState.COMPLETE, TrialState.PRUNED)
        assert retried[0].user_attrs["retry_of"] == killed[0].number
        assert "fail_reason" not in retried[0].user_attrs  # the reason was the dead worker's, not its
    finally:
        optuna.delete_study(study_name=name, storage=postgres)


def test_ctrl_c_on_the_launcher_stops_all_workers_and_keeps_trials(tmp_path):
    path = write_study(tmp_path, "ctrl-c", n_trials=200, epochs=15)
    url = f"sqlite:///{tmp_path / 'storage' / 'ctrl-c.db'}"
    process = sweeps_run(path, "--workers", "2", cwd=tmp_path)
    deadline = time.time() + 180
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            if states("ctrl-c", url)[TrialState.COMPLETE] >= 3:
                break
        except Exception:
            continue
    process.send_signal(signal.SIGINT)  # to the launcher only: it must stop the workers itself
    interrupted = time.time()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    # Every worker got the Ctrl+C and stopped in its running trial (their lines and the
    # launcher's), at once rather than when the launcher's exit tore its pool down.
    assert err.count("interrupted; every finished trial is kept") == 3, err
    assert time.time() - interrupted < 30, err
    time.sleep(0.5)
    assert not worker_pids(process.pid)
    c = states("ctrl-c", url)
    assert c[TrialState.COMPLETE] >= 3 and c[TrialState.RUNNING] == 0
    kept = c[TrialState.COMPLETE] + c[TrialState.PRUNED]
    rerun = sweeps_run(path, "--n-trials", "2", cwd=tmp_path)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0 and f"{kept} finished trials kept" in out


SHUFFLED = """
import numpy as np
from sklearn.datasets import load_digits
from sweeps import Study, Space

def data():
    X, y = load_digits(return_X_y=True)
    order = np.random.permutation(len(y))  # no seed: every process gets other rows
    return X[order], y[order]

study = Study(name="shuffled", task="classification", data=data,
              space=Space(depth=1, width=(16, 32), lr=(1e-3, 1e-2)), folds=3, max_epochs=3, n_trials=4)
"""


def test_a_worker_whose_data_differs_refuses_before_training(tmp_path):
    path = tmp_path / "shuffled.py"
    path.write_text(SHUFFLED)
    process = sweeps_run(str(path), "--workers", "2", cwd=tmp_path)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 2, err
    assert err.count("was made with different data") == 2 and "Traceback" not in err  # each worker said it
    assert "2 of 2 workers failed" in err
    study = optuna.load_study(study_name="shuffled", storage=f"sqlite:///{tmp_path / 'storage' / 'shuffled.db'}")
    assert study.trials == []  # no worker trained a single trial


def test_sigterm_fails_running_trials_stops_workers_and_a_rerun_finishes_at_once(tmp_path):
    # 20 trials of up to 30 epochs: the sweep lasts long enough to be seen with trials complete
    # and running (10 trials of 10 epochs could all end between two looks)
    path = write_study(tmp_path, "term", n_trials=20, epochs=30)
    url = f"sqlite:///{tmp_path / 'storage' / 'term.db'}"
    process = sweeps_run(path, "--workers", "2", cwd=tmp_path)
    deadline = time.time() + 180
    while time.time() < deadline:
        time.sleep(0.5)
        try:
            c = states("term", url)
        except Exception:
            continue
        if c[TrialState.COMPLETE] >= 3 and c[TrialState.RUNNING] >= 1:
            break
    workers = worker_pids(process.pid)
    assert len(workers) == 2
    process.send_signal(signal.SIGTERM)  # what Slurm and Kubernetes send
    out, err = process.communicate(timeout=60)
    assert process.returncode == 143, err
    assert "terminated (SIGTERM); every finished trial is kept" in err and "Traceback" not in err
    time.sleep(0.5)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]  # no process left
    study = optuna.load_study(study_name="term", storage=url)
    assert not study.get_trials(states=(TrialState.RUNNING,))  # nothing waits for a grace period
    stopped = study.get_trials(states=(TrialState.FAIL,))
    assert all("terminated (SIGTERM)" in t.user_attrs["fail_reason"] for t in stopped)
    started = time.time()
    rerun = sweeps_run(path, "--workers", "2", cwd=tmp_path)  # same command: resumes to the exact total
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert_exact_total = len(optuna.load_study(study_name="term", storage=url).get_trials(
        states=(TrialState.COMPLETE, TrialState.PRUNED)))
    assert assert_exact_total == 20
    assert time.time() - started < 60 + 120  # no wait for the 60 s heartbeat grace period before work


def test_workers_die_with_their_launcher_even_when_it_is_killed(tmp_path):
    path = write_study(tmp_path, "orphans", n_trials=200, epochs=15)
    url = f"sqlite:///{tmp_path / 'storage' / 'orphans.db'}"
    process = sweeps_run(path, "--workers", "2", cwd=tmp_path)
    deadline = time.time() + 180
    workers = []
    while time.time() < deadline and len(workers) < 2:
        time.sleep(0.5)
        workers = worker_pids(process.pid)
    while time.time() < deadline:
        try:
            if states("orphans", url)[TrialState.RUNNING] >= 1:
                break
        except Exception:
            pass
        time.sleep(0.3)
    process.kill()  # SIGKILL: the launcher cannot pass anything on
    # The workers write to the same pipe: EOF when all are gone (each fails its trial first).
    _, err = process.communicate(timeout=30 * slowness())
    assert "Traceback" not in err, err
    deadline = time.time() + 30 * slowness()
    while time.time() < deadline and [pid for pid in workers if Path(f"/proc/{pid}").exists()]:
        time.sleep(0.2)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]
    study = optuna.load_study(study_name="orphans", storage=url)
    assert not study.get_trials(states=(TrialState.RUNNING,))
    # A worker stopped mid-trial failed it with the reason; one stopped between Optuna's writes
    # finished them first (no trial failed then). Either way nothing is left RUNNING.
    reasons = [t.user_attrs.get("fail_reason", "") for t in study.get_trials(states=(TrialState.FAIL,))]
    assert all("terminated (SIGTERM)" in r for r in reasons), reasons


def test_a_worker_whose_launcher_died_before_it_started_stops_without_waiting_for_its_job():
    # The launcher gave its pid and died (here: a pid that is not this worker's parent) before the
    # worker could ask for the parent-death signal: the worker must not wait, and must never run
    # a job a dead launcher can no longer stop. Its standard input stays open, as a pipe the
    # worker inherited elsewhere would.
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    env = {**os.environ, "SWEEPS_LAUNCHER_PID": str(dead.pid)}
    worker = subprocess.Popen([sys.executable, "-m", "sweeps.worker"], stdin=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env)
    try:
        worker.wait(timeout=120)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        worker.stdin.close()
        worker.stderr.close()
    assert worker.returncode == -signal.SIGTERM


def trial_record(name: str, url: str) -> list:
    trials = optuna.load_study(study_name=name, storage=url).trials
    return [(t.number, t.state, t.params, t.value, t.intermediate_values) for t in trials]


def test_reproducible_workers_give_the_same_trials_whatever_the_timing_and_the_storage(tmp_path, postgres):
    # Two runs of one study, one on SQLite and one on PostgreSQL: other timings, other storages,
    # and the same trials, values and curves (each storage keeps a double as it is given).
    records = []
    for url in (f"sqlite:///{tmp_path / 'run.db'}", postgres):
        name = f"repro-{uuid.uuid4().hex[:8]}"
        path = tmp_path / f"{name}.py"
        # the same study file both times, but for its name; with MedianPruner (the default) at work
        path.write_text(STUDY.format(name=name, n_trials=6, epochs=4, patience=3).replace(
            'pruner=__import__("optuna").pruners.NopPruner()',
            'pruner=__import__("optuna").pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1)'))
        try:
            process = sweeps_run(str(path), "--workers", "2", "--reproducible", "--storage", url, cwd=tmp_path)
            out, err = process.communicate(timeout=400)
            assert process.returncode == 0, err
            assert "warn" not in err.lower() and "Heartbeat" not in err, err  # the launcher asks, quietly
            records.append(trial_record(name, url))
        finally:
            if url == postgres:
                optuna.delete_study(study_name=name, storage=url)
    assert len(records[0]) == 6
    assert records[0] == records[1]


def test_a_worker_interrupted_while_it_starts_exits_quietly(tmp_path):
    """Stopped before its own handlers are in place (here: still reading its job), a worker exits
    with 130 and no traceback; its launcher reports the stop for every worker."""
    worker = subprocess.Popen([sys.executable, "-m", "sweeps.worker"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    time.sleep(3)  # it waits for its job on stdin
    worker.send_signal(signal.SIGINT)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 130 and err == "", err


def test_a_worker_never_given_a_job_exits_quietly():
    """Workers start before the launcher has loaded anything; one it never needed sees its input close."""
    worker = subprocess.Popen([sys.executable, "-m", "sweeps.worker"], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = worker.communicate(input="", timeout=60)
    assert worker.returncode == 0 and out == err == "", err


def test_workers_started_early_are_stopped_when_the_study_file_is_refused(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("from sweeps import Study\nstudy = Study(name='broken', task='no-such-task')\n")
    process = sweeps_run(str(path), "--workers", "3", cwd=tmp_path)
    workers = set()
    while process.poll() is None and len(workers) < 3:
        workers |= set(worker_pids(process.pid))
        time.sleep(0.05)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "Traceback" not in err, err
    assert len(workers) == 3  # they were started before the study file was read (it takes seconds to import)
    time.sleep(0.5)
    assert not [pid for pid in workers if Path(f"/proc/{pid}").exists()]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@pytest.fixture
def dask_cluster(tmp_path):
    """A real Dask scheduler and two Dask workers (with their nannies) on this machine."""
    dask = str(Path(sys.executable).parent / "dask")
    port = free_port()
    address = f"127.0.0.1:{port}"
    logs = open(tmp_path / "dask.log", "w")
    processes = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port),
                                   "--no-dashboard"], cwd=tmp_path, stdout=logs, stderr=logs)]
    time.sleep(2)
    for _ in range(2):
        processes.append(subprocess.Popen([dask, "worker", f"tcp://{address}", "--nthreads", "1",
                                           "--no-dashboard"], cwd=tmp_path, stdout=logs, stderr=logs))
    from distributed import Client

    with Client(f"tcp://{address}", timeout="30s") as client:
        client.wait_for_workers(2, timeout=60)
    try:
        yield f"dask://{address}"
    finally:
        for p in reversed(processes):
            p.terminate()
        for p in processes:
            try:
                p.wait(timeout=3)  # a nanny takes its time: the test is over, no need to wait
            except subprocess.TimeoutExpired:
                p.kill()
        logs.close()


def test_a_dask_cluster_runs_the_study_exactly_and_a_killed_dask_worker_loses_nothing(
        tmp_path, postgres, dask_cluster):
    name = f"pg-dask-{uuid.uuid4().hex[:8]}"
    # 150 epochs, no early stop: trials of about a second, so the kill lands mid-trial
    path = write_study(tmp_path, name, n_trials=8, epochs=150, patience=150)
    try:
        process = sweeps_run(path, "--cluster", dask_cluster, "--storage", postgres, "--heartbeat-interval", "1",
                             "--grace-period", "4", cwd=tmp_path)
        killed_at, sweeps_worker = running_worker_after(name, postgres, completed=3)
        os.kill(parent_of(sweeps_worker), signal.SIGKILL)  # the Dask worker running that trial
        out, err = process.communicate(timeout=400)
        assert process.returncode == 0, err
        assert f"with 2 workers on {dask_cluster}" in out
        trials = assert_exact(name, postgres, 8)  # the exact total, nothing left running
        complete = {t.number for t in trials if t.state == TrialState.COMPLETE}
        assert set(killed_at) <= complete  # no finished trial lost
        stopped = [t for t in trials if t.state == TrialState.FAIL
                   and not t.user_attrs.get("fail_reason", "").startswith("not needed")]
        assert len(stopped) <= 1 and all("terminated (SIGTERM)" in t.user_attrs["fail_reason"]
                                         or "sent no heartbeat" in t.user_attrs["fail_reason"] for t in stopped)
    finally:
        optuna.delete_study(study_name=name, storage=postgres)


@pytest.fixture
def lone_dask_worker(tmp_path):
    """A real Dask scheduler with one Dask worker and no nanny: when that worker dies, none is left."""
    dask = str(Path(sys.executable).parent / "dask")
    port = free_port()
    address = f"127.0.0.1:{port}"
    logs = open(tmp_path / "dask.log", "w")
    scheduler = subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                                 cwd=tmp_path, stdout=logs, stderr=logs)
    started: list[subprocess.Popen] = []

    def start_worker() -> subprocess.Popen:
        from distributed import Client

        worker = subprocess.Popen([dask, "worker", f"tcp://{address}", "--nthreads", "1", "--no-nanny",
                                   "--no-dashboard"], cwd=tmp_path, stdout=logs, stderr=logs)
        started.append(worker)
        with Client(f"tcp://{address}", timeout="30s") as client:
            client.wait_for_workers(1, timeout=60)
        return worker

    time.sleep(2)
    try:
        yield f"dask://{address}", start_worker
    finally:
        for p in [*started, scheduler]:
            p.kill()
            p.wait(timeout=30)
        logs.close()


def test_a_cluster_that_loses_its_only_worker_ends_in_one_line_and_sigterm_always_stops(
        tmp_path, lone_dask_worker):
    cluster, start_worker = lone_dask_worker
    name = "lone"
    path = write_study(tmp_path, name, n_trials=30, epochs=300, patience=300)
    # Trials of several seconds, so that the kill lands mid-trial: without early stopping (with
    # patience 3 a trial could finish between being seen running and the kill, leaving nothing
    # to fail).
    url = f"sqlite:///{tmp_path / 'storage' / 'lone.db'}"
    worker = start_worker()
    process = sweeps_run(path, "--cluster", cluster, "--heartbeat-interval", "1", "--grace-period", "3", cwd=tmp_path)
    running_worker_after(name, url, completed=0)
    os.kill(worker.pid, signal.SIGKILL)
    killed = time.time()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 2 and "Traceback" not in err
    assert "the Dask cluster has had no worker for 3 s" in err and err.strip().count("\n") == 0, err
    assert time.time() - killed < 30  # noticed within a bound, not waited on forever
    # The orphaned worker process may still be writing its trial's end when the launcher has
    # exited (it was sent SIGTERM when its Dask worker died): give it a bounded moment.
    deadline = time.time() + 30
    while True:
        trials = optuna.load_study(study_name=name, storage=url).trials
        if time.time() > deadline or not [t for t in trials if t.state == TrialState.RUNNING]:
            break
        time.sleep(0.2)
    lost = [t for t in trials if t.state == TrialState.FAIL]
    # The trial ends with its reason: its worker process, whose Dask worker died, was stopped by
    # the kernel (SIGTERM) and failed it itself, or it went silent and the launcher failed it and
    # queued it again.
    reasons = [t.user_attrs["fail_reason"] for t in lost]
    assert lost and all("sent no heartbeat" in r or "terminated (SIGTERM)" in r for r in reasons), reasons
    if any("sent no heartbeat" in r for r in reasons):
        assert [t for t in trials if t.state == TrialState.WAITING]  # queued again for the next run
    assert not [t for t in trials if t.state == TrialState.RUNNING]

    # SIGTERM stops the launcher at once, workers or not.
    worker = start_worker()
    process = sweeps_run(path, "--cluster", cluster, "--heartbeat-interval", "1", "--grace-period", "60",
                         cwd=tmp_path)
    running_worker_after(name, url, completed=0)
    os.kill(worker.pid, signal.SIGKILL)
    process.send_signal(signal.SIGTERM)
    signalled = time.time()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143 and "terminated (SIGTERM)" in err and "Traceback" not in err, err
    assert time.time() - signalled < 30


@pytest.mark.parametrize("cluster, message", [
    ("dask://:abc", "Port could not be cast to integer value"), ("dask://h:99999", "Port out of range"),
    ("dask://[::1", "Invalid IPv6 URL"), ("dask://host", "must look like dask://HOST:PORT"),
])
def test_malformed_cluster_addresses_are_one_line_before_the_data_loads(tmp_path, monkeypatch, capsys, cluster,
                                                                          message):
    from sweeps.run import main as run_main

    (tmp_path / "s.py").write_text("from sweeps import Study\nstudy = Study(name='c', task='regression', "
                                   "data=lambda: 1 / 0)\n")  # loading the data would fail
    monkeypatch.chdir(tmp_path)
    assert run_main([str(tmp_path / "s.py"), "--cluster", cluster]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "ZeroDivisionError" not in err


def test_something_that_is_not_a_scheduler_is_refused_within_a_bound():
    import socket
    import threading

    from sweeps import SweepsError
    from sweeps.sweep.launcher import connect

    silent, chatty = socket.create_server(("127.0.0.1", 0)), socket.create_server(("127.0.0.1", 0))
    held = []

    def serve(server: socket.socket, answer: bytes | None) -> None:
        connection, _ = server.accept()
        held.append(connection)
        if answer is not None:
            connection.recv(1024)
            connection.sendall(answer)

    def serve_all(server: socket.socket, answer: bytes | None) -> None:
        while True:  # as a real server: every connection (sweeps probes first, then shakes hands)
            try:
                serve(server, answer)
            except OSError:  # the probe's connection, closed before the answer
                pass

    threading.Thread(target=serve_all, args=(silent, None), daemon=True).start()
    threading.Thread(target=serve_all, args=(chatty, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"),
                     daemon=True).start()
    started = time.time()
    with pytest.raises(SweepsError, match="did not answer as a Dask scheduler within 1 s"):
        connect(f"dask://127.0.0.1:{silent.getsockname()[1]}", timeout=1)
    assert time.time() - started < 10
    with pytest.raises(SweepsError, match="is not a Dask scheduler"):
        connect(f"dask://127.0.0.1:{chatty.getsockname()[1]}", timeout=5)


def test_cluster_refuses_sqlite_on_other_machines_and_an_unreachable_scheduler(tmp_path, monkeypatch, capsys):
    from sweeps.run import main as run_main

    path = write_study(tmp_path, "cluster-refused", n_trials=2)
    monkeypatch.chdir(tmp_path)  # in this process: the command's own error handling, without its start-up
    for cluster, message in [("dask://10.255.255.1:8786", "cannot share an SQLite file"),
                             ("http://10.255.255.1:8786", "must look like dask://HOST:PORT"),  # the address first
                             (f"dask://127.0.0.1:{free_port()}", "no Dask scheduler answered")]:
        assert run_main([path, "--cluster", cluster, "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "storage" / "cluster-refused.db").exists()  # refused before anything was written

"""Worker processes started before they have work, so that their start-up overlaps the launcher's.

A worker (`python -m sweeps.worker`) spends seconds importing torch, scikit-learn and sweeps
before it reads its job from standard input. `--workers N` starts N of them as soon as its
arguments are read, and they import while the launcher imports, loads the study and its
data and prepares the folds; the launcher then hands each its job (`launcher.supervise`). A
child nobody takes (the study file was wrong, the study is already complete) is stopped.

Only the standard library here: the command imports this before its own heavy imports.
"""

from __future__ import annotations

import os
import subprocess
import sys

WORKERS_PER_CORE = 4  # more workers than this on one machine only share the same cores


def most_workers() -> int:
    """The most `--workers` this machine takes (`RunOptions` refuses more, in one line)."""
    return WORKERS_PER_CORE * (os.cpu_count() or 1)


LAUNCHER_PID = "SWEEPS_LAUNCHER_PID"  # the environment variable a worker finds its launcher's pid in


def start_worker(cwd: str | None = None) -> subprocess.Popen:
    """One `python -m sweeps.worker` child, waiting for its job (JSON) on its standard input."""
    # start_new_session: a terminal's Ctrl+C reaches the launcher alone, which stops every
    # worker through its supervisor exactly once (a second SIGINT would mean "stop at once").
    # Started from the launcher's main thread: the worker asks to be sent SIGTERM when the
    # thread that started it ends (prctl's parent-death signal), and that one lives as long
    # as the launcher.
    # The launcher's pid goes with it: a worker whose launcher died before it could ask for that
    # signal sees another parent than this one, and stops (`worker.die_with_launcher`).
    env = {**os.environ, LAUNCHER_PID: str(os.getpid())}
    return subprocess.Popen([sys.executable, "-m", "sweeps.worker"], cwd=cwd, stdin=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True, env=env)


class WaitingWorkers:
    """Worker children started early; `take` hands one out, `close` stops those never taken."""

    def __init__(self, n: int, cwd: str | None = None) -> None:
        self.waiting = [start_worker(cwd) for _ in range(n)]

    def take(self, cwd: str | None = None) -> subprocess.Popen:
        return self.waiting.pop(0) if self.waiting else start_worker(cwd)

    def close(self) -> None:
        """Stop the children never given a job (each is still importing, or waiting on its input)."""
        for child in self.waiting:
            child.terminate()
        for child in self.waiting:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            for stream in (child.stdin, child.stderr):
                stream.close()
        self.waiting = []

    def __enter__(self) -> WaitingWorkers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

"""Ctrl+C and SIGTERM: stop at once where that loses nothing, a moment later where it would.

Python raises KeyboardInterrupt wherever the main thread happens to be. Inside a storage
write (Optuna telling a trial its state, sweeps recording its evidence) that leaves a trial
RUNNING or half-recorded, and Optuna's own cleanup can then fail with a traceback. So:

- `deferred()` marks such critical sections: a signal arriving inside one is held and
  raised when the section ends, a moment later;
- `immediate()` marks, inside them, the long parts that may stop at once: training. The
  objective then records why the trial stopped, and Optuna fails it, before the stop
  reaches the top;
- everywhere else (loading data, waiting for workers) a signal stops at once.

SIGTERM (Slurm, Kubernetes, `kill`, a dying launcher) is `Terminated`, a KeyboardInterrupt,
and is taken once; a second Ctrl+C while one is held stops at once (the way out of a
write that hangs).
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from sweeps.errors import Terminated

_deferring = False
_pending: BaseException | None = None


def _handler(signum: int, frame: object) -> None:
    global _pending
    if signum == signal.SIGTERM:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: the cleanup it starts must not be cut
        stop: BaseException = Terminated()
    else:
        if _pending is not None:
            raise KeyboardInterrupt()  # pressed again while one is held: now
        stop = KeyboardInterrupt()
    if _deferring:
        _pending = stop
        return
    raise stop


def install() -> bool:
    """Take over SIGINT and SIGTERM in this process (main thread only); False where it cannot."""
    if threading.current_thread() is not threading.main_thread():
        return False
    signal.signal(signal.SIGTERM, _handler)
    if signal.getsignal(signal.SIGINT) is not signal.SIG_IGN:  # nohup and the like: leave it ignored
        signal.signal(signal.SIGINT, _handler)
    return True


def uninstall() -> None:
    global _pending
    _pending = None
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        if signal.getsignal(signal.SIGINT) is _handler:
            signal.signal(signal.SIGINT, signal.default_int_handler)


def _raise_pending() -> None:
    global _pending
    if _pending is not None:
        stop, _pending = _pending, None
        raise stop


@contextmanager
def deferred() -> Iterator[None]:
    """A critical section: a stop that arrives inside is raised when it ends."""
    global _deferring
    outer = _deferring
    _deferring = True
    try:
        yield
    finally:
        _deferring = outer
    if not outer:
        _raise_pending()


@contextmanager
def immediate() -> Iterator[None]:
    """Inside a critical section, a part that may stop at once (and one held stop starts now)."""
    global _deferring
    outer = _deferring
    _deferring = False
    try:
        _raise_pending()
        yield
    finally:
        _deferring = outer

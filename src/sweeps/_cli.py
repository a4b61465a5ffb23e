"""Shared pieces of the command-line verbs: arguments, loading, and error handling.

Each verb is `main(argv=None) -> int`. A `SweepsError` or a storage failure becomes one
line on stderr and exit code 2; Ctrl+C becomes exit code 130 and SIGTERM exit code 143, with
a line saying what was kept.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import warnings
from collections.abc import Callable

import optuna
import torch

from sweeps.data.dataset import Dataset, load_dataset
from sweeps.sweep import stop
from sweeps.errors import SweepsError, Terminated
from sweeps.store.storage import explain
from sweeps.spec.study import Study, load_study_file


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("study_file", help="a study file, e.g. studies/digits.py")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage URL (default: sqlite:///storage/<name>.db)")
    return p


def positive_seconds(text: str) -> float:
    """argparse type for a number of seconds: finite and > 0 (`nan` and `inf` are refused)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive, finite number of seconds, got {text!r}")
    return value


def guarded(body: Callable[[], int], prefix: str | None = None) -> int:
    """Run a verb's body; user and storage errors become one line and exit code 2, never a traceback."""
    lead = f"sweeps: {prefix}: " if prefix else "sweeps: "
    installed = stop.install()
    try:
        return body()
    except SweepsError as e:
        print(f"{lead}error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print(f"\n{lead}terminated (SIGTERM); every finished trial is kept in storage. "
              "Run the same command again to resume.", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print(f"\n{lead}interrupted; every finished trial is kept in storage. "
              "Run the same command again to resume.", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output left (`| head -1`; the only pipe a command writes itself):
        # stop quietly, as Unix tools do, with what SIGPIPE's exit code would be.
        _silence_stdout()
        return 141
    except Exception as e:
        message = explain(e)
        if message is None:
            raise  # a bug in sweeps: the traceback is the report
        print(f"{lead}error: {message}", file=sys.stderr)
        return 2
    finally:
        if installed:
            stop.uninstall()


def _silence_stdout() -> None:
    """Later writes to stdout go nowhere (Python would otherwise complain once more when it
    flushes stdout at exit)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


def load(study_file: str, **overrides) -> tuple[Study, Dataset]:
    """Load and validate the study file and its data; nothing is written yet."""
    spec = load_spec(study_file, **overrides)
    return spec, load_data(study_file, spec)


def load_spec(study_file: str, **overrides) -> Study:
    """The study file's `Study`, with command-line overrides (validated again)."""
    spec = load_study_file(study_file)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes:
        try:
            spec = spec.replace(**changes)
        except SweepsError as e:
            raise SweepsError(f"command line: {e}") from None
    return spec


def load_data(study_file: str, spec: Study) -> Dataset:
    """The study's data, validated, with its held-out rows carved (the slow part of loading)."""
    try:
        return load_dataset(spec)
    except SweepsError as e:
        raise SweepsError(f"{study_file}: {e}") from None
    except Exception as e:  # the user's loader raised
        raise SweepsError(f"{study_file}: the data loader failed: {type(e).__name__}: {e}") from None


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SweepsError("--device cuda: no CUDA device is available here; use --device cpu or auto.")
    return torch.device(name)


def set_threads(workers: int = 1) -> None:
    """Divide the CPU cores among the worker processes (one process: all of them)."""
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))


def quiet_optuna() -> None:
    """Our own progress bar and summary replace Optuna's per-trial log lines."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    logging.getLogger("optuna").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)

"""Shared pieces of the command-line verbs: arguments, loading, and error handling.

Each verb is `main(argv=None) -> int`. A `SweepsError` becomes one line on stderr and
exit code 2; Ctrl+C becomes exit code 130 with a line saying what was kept.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable

import optuna
import torch

from sweeps.data import Dataset, load_dataset
from sweeps.errors import SweepsError
from sweeps.study import Study, load_study_file


def parser(prog: str, description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=description)
    p.add_argument("study_file", help="a study file, e.g. studies/digits.py")
    p.add_argument("--storage", metavar="URL",
                   help="Optuna storage URL (default: sqlite:///storage/<name>.db)")
    return p


def guarded(body: Callable[[], int]) -> int:
    """Run a verb's body; user errors become one line and exit code 2, never a traceback."""
    try:
        return body()
    except SweepsError as e:
        print(f"sweeps: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nsweeps: interrupted; every finished trial is kept in storage. "
              "Run the same command again to resume.", file=sys.stderr)
        return 130


def load(study_file: str, **overrides) -> tuple[Study, Dataset]:
    """Load and validate the study file and its data; nothing is written yet."""
    spec = load_study_file(study_file)
    changes = {k: v for k, v in overrides.items() if v is not None}
    if changes:
        try:
            spec = spec.replace(**changes)
        except SweepsError as e:
            raise SweepsError(f"command line: {e}") from None
    try:
        dataset = load_dataset(spec)
    except SweepsError as e:
        raise SweepsError(f"{study_file}: {e}") from None
    except Exception as e:  # the user's loader raised
        raise SweepsError(f"{study_file}: the data loader failed: {type(e).__name__}: {e}") from None
    return spec, dataset


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

"""Shared pieces of the command-line verbs: arguments, loading, and error handling.

Each verb is `main(argv=None) -> int`; its arguments are read with `sweeps._args` before this
module (and the verb's work, torch and scikit-learn) is imported. A `SweepsError` or a storage failure becomes one
line on stderr and exit code 2; Ctrl+C becomes exit code 130 and SIGTERM exit code 143, with
a line saying what was kept.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Callable

import optuna
import torch

from sweeps.data.dataset import Dataset, load_dataset
from sweeps.sweep import stop
from sweeps.errors import READER, SweepsError, Terminated
from sweeps.store.storage import explain
from sweeps.spec.study import Study, load_study_file


def guarded(body: Callable[[], int], prefix: str | None = None) -> int:
    """Run a verb's body; user and storage errors become one line and exit code 2, never a traceback."""
    lead = f"sweeps: {prefix}: " if prefix else "sweeps: "
    installed = stop.install()
    reader = READER.set("cli")  # messages name options as flags
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
        READER.reset(reader)
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

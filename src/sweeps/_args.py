"""The command-line verbs' arguments: what `--help` and a wrong flag need, and nothing more.

A verb reads its arguments before it imports its work (torch, scikit-learn: seconds), so
`--help` and an argument error answer at once; this module imports only the standard library.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
from typing import NoReturn

DEVICES = ("auto", "cpu", "cuda")


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


def leave(code: int) -> NoReturn:
    """End the command with `code`, quickly: its work is done.

    What the command dropped is collected first, so a storage's last connection closes (SQLite
    folds its WAL file back into the database). Then `gc.freeze()`: the interpreter's shutdown
    would otherwise free one by one the millions of objects torch and scikit-learn made at
    import, about 0.8 s at the end of every command and worker (`benchmarks/bench_startup.py`).
    atexit handlers still run; what stays reachable to the end is left to the operating system.
    """
    gc.collect()
    gc.freeze()
    sys.exit(code)

"""The command-line verbs' arguments: what `--help` and a wrong flag need, and nothing more.

A verb reads its arguments before it imports its work (torch, scikit-learn: seconds), so
`--help` and an argument error answer at once; this module imports only the standard library.
"""

from __future__ import annotations

import argparse
import math

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

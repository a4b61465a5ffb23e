"""A round of --follow as a study file: its parent's study, and what this round changed.

The file loads its parent with `load_study` and replaces only what the remedy changes, so
that it reads as the diff it is, runs alone (`python -m sweeps.run` with the parent's
storage), and keeps whatever the parent's file computes (its data loader, a Table, a
function) without copying code. A comment names the verdict and the numbers behind it.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

from sweeps.follow.remedies import Remedy, param_source


def round_path(first: Path, number: int) -> Path:
    """`studies/digits.py` -> `studies/digits_round2.py`, beside the first."""
    return first.with_name(f"{first.stem}_round{number}.py")


def round_name(root: str, number: int) -> str:
    return f"{root}-round{number}"


def render(*, parent_file: Path, file: Path, name: str, number: int, parent_name: str, remedy: Remedy,
           evidence: str, storage: str) -> str:
    """The study file's text."""
    parent = os.path.relpath(parent_file, file.parent)
    fields = [f"    name={name!r},"]
    if remedy.space:
        inner = ", ".join(f"{k}={param_source(k, v)}" for k, v in remedy.space.items())
        fields.append(f"    space=parent.space.replace({inner}),")
    fields += [f"    {k}={v!r}," for k, v in remedy.study.items()]
    wrap = lambda text, indent="": textwrap.fill(text, 96, initial_indent=indent,  # noqa: E731
                                                 subsequent_indent=indent, break_on_hyphens=False)
    doc = [f"Round {number} of --follow: study '{parent_name}' with one remedy.",
           "",
           wrap(f"Diagnosis of '{parent_name}' (development rows only): {remedy.problem}: {remedy.why}"),
           "",
           wrap(evidence),
           "",
           wrap(f"Change: {remedy.change}."),
           "",
           "Runs alone, in its parent's storage:",
           "",
           f"    python -m sweeps.run {file.name} --storage {storage}"]
    return "\n".join(['"""' + doc[0], *doc[1:], '"""', "",
                      "from sweeps import load_study", "",
                      f"parent = load_study({parent!r})", "",
                      "study = parent.replace(", *fields, ")", ""])

"""`python -m sweeps.new DATA --target COLUMN`: write a study file for a table, ready to run.

    python -m sweeps.new data/income.csv --target income [--task classification|regression]
                         [--output studies/income.py] [--name NAME] [--columns a,b,...]
                         [--drop id,...] [--force]

Reads the CSV (optionally .gz) or Parquet file as `Table` will, checks it the same way
(unknown target, columns missing everywhere, id-like or half-numeric columns are refused
with one line naming the column and the fix), and writes a commented study file with
settings sized to the table: the task (from the target's values, or `--task`), a class
weight to search when a class is rare, batches and epochs by row count, and the recipe's
defaults for the rest. `python -m sweeps.run` then runs it unchanged.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from sweeps import _cli
from sweeps.errors import SweepsError
from sweeps.storage import STUDY_NAME
from sweeps.table import Table

LARGE = 10_000  # rows: above, batches of 256 and 30 epochs (patience 4); below, 64 and 100 (patience 10)
MAX_CLASS_LEVELS = 10  # an integer target with at most this many values is taken as classes
RARE = 0.10  # a class below this share gets class weights searched


def inspect(path: Path, target: str, columns: list[str] | None, drop: list[str], task: str | None) -> dict:
    """What the study file needs to say about the table (raises SweepsError on what Table refuses)."""
    import pandas as pd

    table = Table(path, target=target, columns=columns, drop=drop, base_dir=Path.cwd())
    X, y = table()  # the same checks as a sweep: target, drop, columns
    if task is None:
        numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
        whole = numeric and bool((y.dropna() == y.dropna().round()).all())
        task = "regression" if numeric and not (whole and y.nunique() <= MAX_CLASS_LEVELS) else "classification"
    facts = {"rows": len(y), "columns": list(X.columns), "task": task,
             "numeric": [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c])],
             "missing": {c: int(n) for c, n in X.isna().sum().items() if n}}
    facts["categorical"] = [c for c in X.columns if c not in facts["numeric"]]
    if task == "classification":
        shares = y.astype(str).value_counts(normalize=True)
        if len(shares) < 2:
            raise SweepsError(f"{path}: the target {target!r} has a single value; there is nothing to classify.")
        facts["classes"] = {str(k): round(float(v), 4) for k, v in shares.items()}
        facts["rare"] = float(shares.min()) < RARE
    else:
        if not pd.api.types.is_numeric_dtype(y):
            raise SweepsError(f"{path}: --task regression needs a numeric target; {target!r} is not numeric.")
        facts["target_range"] = (float(y.min()), float(y.max()))
    return facts


def study_file(data: Path, output: Path, name: str, target: str, columns: list[str] | None, drop: list[str],
               facts: dict) -> str:
    """The text of the study file."""
    large = facts["rows"] > LARGE
    relative = Path(os.path.relpath(data.resolve(), output.resolve().parent))
    lines = [f'"""{name}: predict {target!r} ({facts["task"]}) from {data.name}.', "",
             f"Written by python -m sweeps.new from {facts['rows']:,} rows x {len(facts['columns'])} columns "
             f"({len(facts['numeric'])} numeric, {len(facts['categorical'])} categorical).",
             "Run it with: python -m sweeps.run " + str(output)]
    if facts["missing"]:
        lines += ["", "Missing values (filled per fold: numeric with the median, categorical with the most frequent): "
                  + ", ".join(f"{c} {n}" for c, n in facts["missing"].items()) + "."]
    if facts["task"] == "classification":
        lines += ["", "Classes: " + ", ".join(f"{c} {share:.1%}" for c, share in facts["classes"].items()) + "."]
    lines += ['"""', ""]
    imports = "Categorical, Space, Study, Table" if facts.get("rare") else "Space, Study, Table"
    lines += [f"from sweeps import {imports}", ""]
    table_args = [repr(str(relative)), f"target={target!r}"]
    if columns:
        lines += [f"COLUMNS = {columns!r}", ""]
        table_args.append("columns=COLUMNS")
    if drop:
        table_args.append(f"drop={drop!r}")
    space = ["depth=(1, 3), width=(16, 256), dropout=(0.0, 0.5), weight_decay=(1e-6, 1e-2), lr=(3e-4, 1e-2)",
             f"batch_size={256 if large else 64}"]
    comments = [f"# {'More' if large else 'Fewer'} than {LARGE:,} rows: "
                f"{'batches of 256, 30 epochs, patience 4' if large else 'batches of 64, 100 epochs, patience 10'}."]
    if facts.get("rare"):
        space.append('class_weight=Categorical(["none", "balanced"])')
        comments.append(f"# A class under {RARE:.0%} of the rows: whether to weigh classes is searched, and every "
                        "trial is scored by the class-balanced loss.")
    lines += comments
    lines += ["study = Study(",
              f"    name={name!r},",
              f"    task={facts['task']!r},",
              f"    data=Table({', '.join(table_args)}),",
              "    space=Space(" + ",\n                ".join(space) + "),",
              f"    folds=5, max_epochs={30 if large else 100}, patience={4 if large else 10}, n_trials=25, seed=0,",
              ")", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m sweeps.new", description="Write a study file for a table.")
    p.add_argument("data", help="a CSV (optionally .gz) or Parquet file")
    p.add_argument("--target", required=True, help="the column to predict")
    p.add_argument("--task", choices=("classification", "regression"), help="(default: from the target's values)")
    p.add_argument("--output", metavar="PATH", help="the study file to write (default: studies/<name>.py)")
    p.add_argument("--name", help="the study's name (default: from the file name)")
    p.add_argument("--columns", help="comma-separated column names, for a file without a header row")
    p.add_argument("--drop", default="", help="comma-separated columns to leave out (ids, leaks)")
    p.add_argument("--force", action="store_true", help="overwrite an existing study file")
    args = p.parse_args(argv)

    def body() -> int:
        data = Path(args.data)
        stem = data.name.split(".")[0]
        name = args.name or re.sub(r"[^A-Za-z0-9_.-]+", "_", stem).strip("_.-") or "study"
        if not STUDY_NAME.match(name):
            raise SweepsError(f"--name {name!r}: use letters, digits, '_', '-' and '.'.")
        output = Path(args.output) if args.output else Path("studies") / f"{name}.py"
        if output.exists() and not args.force:
            raise SweepsError(f"{output}: exists; pass --force to overwrite it, or --output another path.")
        columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
        drop = [c.strip() for c in args.drop.split(",") if c.strip()]
        facts = inspect(data, args.target, columns, drop, args.task)
        text = study_file(data, output, name, args.target, columns, drop, facts)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text)
        print(f"Wrote {output}: {facts['task']} of {args.target!r} on {facts['rows']:,} rows. Run it with:\n"
              f"  python -m sweeps.run {output}")
        return 0

    return _cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())

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

A table is data from anywhere, and a study file is code that every verb runs. So nothing
taken from the table (its file name, column names, class labels, the target's name) is
ever pasted into the file's text: each enters only as a Python literal written by `repr`,
never inside the docstring or a comment, and the finished text is compiled and its syntax
tree checked (`check_generated`: only the expected import, assignments of literals, and
calls of `Study`, `Space`, `Table` and `Categorical`) before anything is written.
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import sys
from pathlib import Path
from typing import Any

from sweeps import _args
from sweeps.errors import SweepsError
from sweeps.spec.table import Table

LARGE = 10_000  # rows: above, batches of 256 and 30 epochs (patience 4); below, 64 and 100 (patience 10)
MAX_CLASS_LEVELS = 10  # an integer target with at most this many values is taken as classes
RARE = 0.10  # a class below this share gets class weights searched
LINE = 100  # columns of the generated file


def inspect(path: Path, target: str, columns: list[str] | None, drop: list[str], task: str | None) -> dict:
    """What the study file needs to say about the table (raises SweepsError on what Table refuses)."""
    import pandas as pd

    table = Table(path, target=target, columns=columns, drop=drop, base_dir=Path.cwd())
    X, y = table()  # the same checks as a sweep: target, drop, columns
    if task is None:
        numeric = pd.api.types.is_numeric_dtype(y) and not pd.api.types.is_bool_dtype(y)
        whole = numeric and bool((y.dropna() == y.dropna().round()).all())
        task = "regression" if numeric and not (whole and y.nunique() <= MAX_CLASS_LEVELS) else "classification"
    facts = {"rows": len(y), "columns": [str(c) for c in X.columns], "task": task,
             "numeric": [str(c) for c in X.columns if pd.api.types.is_numeric_dtype(X[c])],
             "missing": {str(c): int(n) for c, n in X.isna().sum().items() if n}}
    facts["categorical"] = [c for c in facts["columns"] if c not in facts["numeric"]]
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
    facts["column_info"] = column_info(X)
    facts["warnings"] = table_warnings(X, y, task)
    return facts


# --- what a reader of the table should know before a sweep ----------------------------------
LEAK_CORRELATION = 0.999  # a numeric column this correlated with a regression target
LEAK_ERROR_SHARE = 0.01  # one column leaves under 1 % of the majority class's errors
CODE_LEVELS = (3, 50)  # whole-number columns with this many levels...
CODE_SPREAD = 2.0  # ...spread over more than twice as many values: codes, not counts
SAMPLE_ROWS = 20_000  # the checks read at most this many rows (seeded)


def column_info(X) -> dict[str, tuple[str, str, float]]:
    """Per column: its type in the table, how sweeps treats it, its share of missing values."""
    import pandas as pd

    info = {}
    for name in X.columns:
        column = X[name]
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            treated = "numeric: scaled per fold"
        else:
            treated = f"categorical: one-hot, {column.nunique()} levels"
        info[str(name)] = (str(column.dtype), treated, round(float(column.isna().mean()), 4))
    return info


def table_warnings(X, y, task: str) -> list[str]:
    """What looks wrong before any training: leaks (a column, or a sum of columns, that gives the
    target), columns that carry nothing, and whole-number codes read as quantities. Column
    names appear as `repr` (a name may hold anything)."""
    import numpy as np
    import pandas as pd

    if len(X) > SAMPLE_ROWS:
        rows = np.random.default_rng(0).choice(len(X), SAMPLE_ROWS, replace=False)
        X, y = X.iloc[rows], y.iloc[rows]
    found = []
    numeric = [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) and not pd.api.types.is_bool_dtype(X[c])]
    for name in X.columns:
        if X[name].nunique(dropna=True) <= 1:
            found.append(f"column {str(name)!r} has one value: it carries nothing; drop it (--drop).")
    if task == "regression":
        found += _regression_leaks(X[numeric], y.to_numpy(dtype=float))
    else:
        found += _class_leaks(X, y.astype(str))
    for name in numeric:
        values = X[name].dropna()
        levels = values.nunique()
        if (values == values.round()).all() and CODE_LEVELS[0] <= levels <= CODE_LEVELS[1] \
                and values.max() - values.min() + 1 > CODE_SPREAD * levels:
            found.append(f"column {str(name)!r} holds {levels} whole numbers spread from {values.min():g} to "
                         f"{values.max():g}: if they are codes (stores, regions, products), not quantities, read "
                         "them as categories: Table(..., categorical=[...]).")
    return found


def _regression_leaks(X, y) -> list[str]:
    """A numeric column, or a weighted sum of them, that reproduces the target."""
    import numpy as np

    found = []
    complete = X.dropna()
    if complete.empty or len(complete) < 3:
        return found
    values, target = complete.to_numpy(dtype=float), y[X.index.get_indexer(complete.index)]
    scale = values.std(0)
    varying = scale > 0
    if not varying.any() or target.std() == 0:
        return found
    for j, name in enumerate(complete.columns):
        correlation = np.corrcoef(values[:, j], target)[0, 1] if varying[j] else 0.0
        if abs(correlation) >= LEAK_CORRELATION:
            found.append(f"column {str(name)!r} predicts the target almost perfectly (correlation "
                         f"{correlation:+.4f}): a leak? Drop it (--drop) unless it is known when predictions are "
                         "made.")
    design = np.column_stack([values[:, varying] / scale[varying], np.ones(len(values))])
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coef
    if np.sqrt(np.mean(residual ** 2)) <= 1e-6 * target.std():
        used = np.abs(coef[:-1]) > 1e-6 * np.abs(coef[:-1]).max()
        names = [str(c) for c in complete.columns[varying][used]]
        weights = coef[:-1][used] / scale[varying][used]  # back in the columns' own units
        if len(names) > 1:
            formula = " + ".join(f"{w:.4g}·{n!r}" for w, n in zip(weights, names))
            intercept = target.mean() - float(values[:, varying][:, used].mean(0) @ weights)
            if abs(intercept) > 1e-6 * target.std():
                formula += f" + {intercept:.4g}"
            found.append(f"columns {', '.join(repr(n) for n in names)} reproduce the target exactly on every row "
                         f"(target = {formula}): a leak? Drop them (--drop) unless they are all known when "
                         "predictions are made.")
    return found


def _class_leaks(X, y) -> list[str]:
    """A single column whose values (binned, for numeric ones) give the class almost always."""
    import pandas as pd

    found = []
    n = len(y)
    majority_errors = 1 - y.value_counts(normalize=True).max()
    if majority_errors == 0:
        return found
    for name in X.columns:
        column = X[name]
        if pd.api.types.is_numeric_dtype(column) and column.nunique() > 100:
            column = pd.qcut(column, q=min(100, max(2, n // 20)), duplicates="drop")
        if column.nunique() > max(2, n // 20):  # too many levels to judge from their rows
            continue
        grouped = pd.crosstab(column.astype(str), y)
        errors = 1 - grouped.max(axis=1).sum() / n
        if errors <= LEAK_ERROR_SHARE * majority_errors:
            found.append(f"column {str(name)!r} gives the class almost always on its own ({1 - errors:.2%} of the "
                         "rows): a leak? Drop it (--drop) unless it is known when predictions are made.")
    return found


# --- writing source from data: literals only ----------------------------------------------
def literal(value: Any, indent: int = 0) -> str:
    """`value` (str, number, bool, None, or lists/tuples/dicts of them) as Python source.

    Every string goes through `repr`, which escapes quotes, backslashes, newlines, NUL and
    unprintable characters: whatever a name holds, it stays one string literal. Long
    collections are wrapped one element per line.
    """
    if isinstance(value, (str, int, float, bool)) or value is None:
        return repr(value)
    if isinstance(value, dict):
        items = [f"{literal(k)}: {literal(v, indent + 4)}" for k, v in value.items()]
        opening, closing = "{", "}"
    elif isinstance(value, (list, tuple)):
        items = [literal(v, indent + 4) for v in value]
        opening, closing = ("[", "]") if isinstance(value, list) else ("(", ",)" if len(value) == 1 else ")")
    else:
        raise TypeError(f"no literal for {type(value).__name__}")
    flat = opening + ", ".join(items) + closing
    if indent + len(flat) <= LINE and "\n" not in flat:
        return flat
    # Filled like prose: as many items per line as fit, each line indented one step.
    pad = " " * (indent + 4)
    rows, row = [], ""
    for item in items:
        piece = item + ","
        if row and (len(pad) + len(row) + 1 + len(piece) > LINE or "\n" in item):
            rows.append(row)
            row = ""
        row = f"{row} {piece}" if row else piece
    rows.append(row)
    return opening + "\n" + "".join(f"{pad}{r}\n" for r in rows) + " " * indent + closing[-1]


SWEEPS_NAMES = {"Categorical", "Space", "Study", "Table"}


def check_generated(text: str) -> None:
    """Refuse generated source that does anything but declare a study.

    Allowed: a module docstring; `from sweeps import` some of `SWEEPS_NAMES`; assignments
    to plain names of literals (constants, lists, tuples, dicts), of names assigned before,
    and of calls of the imported names with such arguments. Anything else (another
    statement, an attribute, a subscript, a lambda, a call of anything else) is a bug in
    this module, caught here before a file is written. Raises `ValueError`.
    """
    tree = ast.parse(text)  # a SyntaxError here is a bug too
    compile(tree, "<generated study file>", "exec")
    known: set[str] = set()

    def expression(node: ast.AST) -> None:
        if isinstance(node, ast.Constant) and isinstance(node.value, (str, int, float, bool, type(None))):
            return
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub) and isinstance(node.operand, ast.Constant):
            return expression(node.operand)
        if isinstance(node, (ast.List, ast.Tuple)):
            for element in node.elts:
                expression(element)
            return None
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values):
                if key is None:
                    raise ValueError("a ** unpacking in a dict")
                expression(key)
                expression(value)
            return None
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and node.id in known:
            return None
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in SWEEPS_NAMES \
                and node.func.id in known:
            for arg in node.args:
                expression(arg)
            for keyword in node.keywords:
                if keyword.arg is None:
                    raise ValueError("a ** unpacking in a call")
                expression(keyword.value)
            return None
        raise ValueError(f"unexpected {type(node).__name__} at line {getattr(node, 'lineno', '?')}")

    for i, statement in enumerate(tree.body):
        if i == 0 and isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Constant) \
                and isinstance(statement.value.value, str):
            continue  # the docstring
        if isinstance(statement, ast.ImportFrom) and statement.module == "sweeps" and statement.level == 0:
            names = {alias.name for alias in statement.names}
            if not names <= SWEEPS_NAMES or any(alias.asname for alias in statement.names):
                raise ValueError(f"unexpected import of {sorted(names - SWEEPS_NAMES)}")
            known |= names
            continue
        if isinstance(statement, ast.Assign) and len(statement.targets) == 1 \
                and isinstance(statement.targets[0], ast.Name):
            expression(statement.value)
            known.add(statement.targets[0].id)
            continue
        raise ValueError(f"unexpected {type(statement).__name__} statement at line {statement.lineno}")


def study_file(data: Path, output: Path, name: str, target: str, columns: list[str] | None, drop: list[str],
               facts: dict) -> str:
    """The text of the study file (checked by `check_generated`)."""
    large = facts["rows"] > LARGE
    relative = Path(os.path.relpath(data.resolve(), output.resolve().parent))
    task = facts["task"]
    # The docstring holds numbers and fixed words only: the table's own strings go below, as literals.
    counts = (f"{facts['rows']:,} rows x {len(facts['columns'])} columns ({len(facts['numeric'])} numeric, "
              f"{len(facts['categorical'])} categorical)")
    doc = [f"A {task} study written by python -m sweeps.new from a table of {counts}.", ""]
    if task == "classification":
        smallest = min(facts["classes"].values())
        doc.append(f"{len(facts['classes'])} classes, the smallest {smallest:.1%} of the rows (CLASSES below).")
    else:
        low, high = facts["target_range"]
        doc.append(f"The target ranges from {low:.6g} to {high:.6g}.")
    if facts["missing"]:
        doc.append(f"{len(facts['missing'])} column(s) have missing values (MISSING below), filled per fold: "
                   "numeric columns with the median, categorical ones with the most frequent value.")
    doc += ["Names are written exactly as the table has them. Run it with python -m sweeps.run and this "
            "file's path."]
    lines = ['"""' + "\n".join(_wrap(doc)) + '\n"""', ""]
    imports = "Categorical, Space, Study, Table" if facts.get("rare") else "Space, Study, Table"
    lines += [f"from sweeps import {imports}", ""]
    lines += ["# What the table holds, as sweeps.new found it (for reading; the study below uses TARGET",
              "# and, for a file without a header row, COLUMNS).",
              f"TARGET = {literal(target)}"]
    if columns:
        lines.append(f"COLUMNS = {literal(list(columns))}")
    lines += ["# Numeric columns are scaled per fold (Study.preprocessing), categorical ones one-hot encoded.",
              f"NUMERIC = {literal(facts['numeric'])}",
              f"CATEGORICAL = {literal(facts['categorical'])}"]
    if facts["missing"]:
        lines += ["# Rows with a missing value, per column.", f"MISSING = {literal(facts['missing'])}"]
    lines += ["# Each column: its type in the table, how sweeps treats it, its share of missing values.",
              "COLUMN_INFO = {"]
    lines += [f"    {literal(name)}: {literal(info)}," for name, info in facts["column_info"].items()]
    lines.append("}")
    if facts["warnings"]:
        lines += ["# Found in the table before any training (also printed by sweeps.new): read them first.",
                  f"WARNINGS = {literal(facts['warnings'])}"]
    if task == "classification":
        lines += ["# Each class's share of the rows.", f"CLASSES = {literal(facts['classes'])}"]
    lines.append("")
    table_args = [literal(str(relative)), "target=TARGET"]
    if columns:
        table_args.append("columns=COLUMNS")
    if drop:
        table_args.append(f"drop={literal(list(drop))}")
    space = ["depth=(1, 3), width=(16, 256), dropout=(0.0, 0.5), weight_decay=(1e-6, 1e-2), lr=(3e-4, 1e-2)",
             f"batch_size={256 if large else 64}"]
    lines.append(f"# {'More' if large else 'Fewer'} than {LARGE:,} rows: "
                 f"{'batches of 256, 30 epochs, patience 4' if large else 'batches of 64, 100 epochs, patience 10'}.")
    if facts.get("rare"):
        space.append('class_weight=Categorical(["none", "balanced"])')
        lines.append(f"# A class under {RARE:.0%} of the rows: whether to weigh classes is searched, and every "
                     "trial is scored by the class-balanced loss.")
    lines += ["study = Study(",
              f"    name={literal(name)},",
              f"    task={literal(task)},",
              f"    data=Table({', '.join(table_args)}),",
              "    space=Space(" + ",\n                ".join(space) + "),",
              f"    folds=5, max_epochs={30 if large else 100}, patience={4 if large else 10}, n_trials=25, seed=0,",
              ")", ""]
    text = "\n".join(lines)
    check_generated(text)
    return text


def _wrap(paragraph: list[str]) -> list[str]:
    import textwrap

    out = []
    for line in paragraph:
        out += textwrap.wrap(line, LINE - 4) if line else [""]
    return out


def parser() -> argparse.ArgumentParser:
    """The command's arguments (the docs' command lines are checked against it)."""
    p = argparse.ArgumentParser(prog="python -m sweeps.new", description="Write a study file for a table.")
    p.add_argument("data", help="a CSV (optionally .gz) or Parquet file")
    p.add_argument("--target", required=True, help="the column to predict")
    p.add_argument("--task", choices=("classification", "regression"), help="(default: from the target's values)")
    p.add_argument("--output", metavar="PATH", help="the study file to write (default: studies/<name>.py)")
    p.add_argument("--name", help="the study's name (default: from the file name)")
    p.add_argument("--columns", help="comma-separated column names, for a file without a header row")
    p.add_argument("--drop", default="", help="comma-separated columns to leave out (ids, leaks)")
    p.add_argument("--force", action="store_true", help="overwrite an existing study file")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The work's imports come after the arguments are read: --help and a wrong flag answer at once,
    # without loading torch and scikit-learn (seconds). A door is imported by nothing: no cycle hides here.
    from sweeps import _cli
    from sweeps.spec.study import STUDY_NAME
    from sweeps.store.storage import write_text_atomic

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
        write_text_atomic(output, text)
        print(f"Wrote {output}: {facts['task']} of {args.target!r} on {facts['rows']:,} rows. Run it with:\n"
              f"  python -m sweeps.run {output}")
        for warning in facts["warnings"]:
            print(f"sweeps: warning: {warning}", file=sys.stderr)
        return 0

    return _cli.guarded(body)


if __name__ == "__main__":
    _args.leave(main())

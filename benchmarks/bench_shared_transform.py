"""What reading shared rows costs: a window's transform, stored grid fractions against found ones.

    python benchmarks/bench_shared_transform.py [--rows 200000] [--columns 50] [--reps 3]

An all-numeric synthetic table (`make_classification`), its 5 folds in the shared layout with
`preprocessing="auto"` (every continuous column ranked). Its `SharedRows` keeps the dataset's
own matrix and each ranked cell's grid interval, and finds the fraction into the interval as a
window is read (`whole_rows`); the same rows with the fractions stored (a float32 per ranked
cell, and a copy of the values, as a DataFrame's shared rows keep them) is the baseline. Timed,
alternating: 6 windows of 16,384 rows per fold; medians of the repetitions, and their ratio.
The two must give the same features exactly (checked).
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import torch
from sklearn.datasets import make_classification

from sweeps import Space, Study
from sweeps.data.dataset import load_dataset
from sweeps.data.folds import make_folds
from sweeps.data.shared import WINDOW_ROWS


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--columns", type=int, default=50)
    p.add_argument("--reps", type=int, default=3)
    args = p.parse_args()
    X, y = make_classification(n_samples=args.rows, n_features=args.columns, n_informative=args.columns // 2,
                               random_state=0)
    spec = Study(name="transform", task="classification", data=lambda: (X, y), space=Space(), folds=5)
    folds = make_folds(load_dataset(spec), 5, 0, layout="shared", scaling="auto")
    found = folds.X_train.source
    everything = torch.arange(found.numeric.shape[0]).unsqueeze(0)
    _, fractions = found._positions(everything)
    stored = dataclasses.replace(found, whole_rows=False, numeric=found.numeric[:, found.raw_columns].contiguous(),
                                 grid_frac=fractions[0].float())
    every = torch.arange(folds.k)
    rows = folds.X_train.rows
    order = torch.stack([torch.randperm(rows.shape[1], generator=torch.Generator().manual_seed(f))
                         for f in range(folds.k)])
    assert torch.equal(found.transform(every, rows[:, :5000]), stored.transform(every, rows[:, :5000]))
    times = {"found": [], "stored": []}
    for _ in range(args.reps):
        for name, source in (("found", found), ("stored", stored)):
            started = time.perf_counter()
            for start in range(0, 6 * WINDOW_ROWS, WINDOW_ROWS):
                source.transform(every, rows[every.unsqueeze(1), order[:, start:start + WINDOW_ROWS]])
            times[name].append(time.perf_counter() - started)
    found_s, stored_s = statistics.median(times["found"]), statistics.median(times["stored"])
    print(f"{args.rows:,} rows x {args.columns} columns, {found.rank_columns.numel()} ranked, 5 folds; "
          f"6 windows of {WINDOW_ROWS:,} rows per fold, medians of {args.reps}:")
    print(f"fractions stored {stored_s:.2f} s, found while reading {found_s:.2f} s: {found_s / stored_s:.2f}x")


if __name__ == "__main__":
    main()

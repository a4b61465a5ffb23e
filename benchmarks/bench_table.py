"""What a large table costs: load, validate, and preprocess the folds of 500,000 x 50.

    python benchmarks/bench_table.py [--rows 500000]

Writes a synthetic CSV (40 numeric columns with 2 % missing values, 10 categorical columns
of 10 levels, a binary target) to a temporary folder, then times `load_dataset` (read,
column checks, held-out split, fingerprint) and `make_folds` (a ColumnTransformer fitted
per fold, 5 folds) and reports the process's peak memory.
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sweeps import Space, Study, Table
from sweeps.data import load_dataset
from sweeps.folds import make_folds


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=500_000)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(args.rows, 40))
    numeric[rng.random(numeric.shape) < 0.02] = np.nan
    frame = pd.DataFrame(numeric, columns=[f"n{i}" for i in range(40)])
    for i in range(10):
        frame[f"c{i}"] = rng.choice([f"level{j}" for j in range(10)], args.rows)
    frame["target"] = (np.nan_to_num(numeric[:, 0]) + rng.normal(size=args.rows) > 0).astype(int)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "big.csv"
        frame.to_csv(path, index=False)
        size = path.stat().st_size / 2**20
        del frame, numeric
        base = peak_mib()
        spec = Study(name="big", task="classification", data=Table(path, target="target"), space=Space())
        start = time.perf_counter()
        dataset = load_dataset(spec)
        loaded = time.perf_counter() - start
        start = time.perf_counter()
        folds = make_folds(dataset, spec.folds, spec.seed)
        folded = time.perf_counter() - start
    tensors = sum(t.numel() * t.element_size() for t in (folds.X_train, folds.X_val)) / 2**20
    print(f"{args.rows} rows x 50 columns, CSV {size:.0f} MiB")
    print(f"load_dataset (read, check, split, fingerprint): {loaded:.1f} s")
    print(f"make_folds (5 x ColumnTransformer fit + transform): {folded:.1f} s -> {folds.X_train.shape[2]} features")
    print(f"fold tensors: {tensors:.0f} MiB; peak memory of the process: {peak_mib():.0f} MiB "
          f"({base:.0f} MiB before loading)")


if __name__ == "__main__":
    main()

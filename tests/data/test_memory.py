"""Memory: a big table costs about one copy of itself to load and one more to lay out its folds.

numpy's allocations are traced (tracemalloc), so the float64 temporaries that once made a
3-million-row table peak at 8x its float32 matrix show here on a small one: loading kept a
float64 copy of the whole matrix and its masks, fitting each fold made float64 copies of its
training rows, and laying out the copies made each fold's features, then padded and stacked
them again. Now columns are converted and fitted one at a time and features are written in
blocks of rows straight into their place. `benchmarks/bench_table.py` measures whole
processes on tables of millions of rows.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pandas as pd

from sweeps import Space, Study
from sweeps.data.dataset import load_dataset
from sweeps.data.folds import make_folds
from sweeps.data.preprocess import BLOCK_VALUES

ROWS, COLUMNS = 50_000, 100  # wide enough that per-row bookkeeping (the split, row numbers) is small
MATRIX = ROWS * COLUMNS * 4  # bytes of the float32 design matrix


def table() -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(ROWS, COLUMNS)), columns=[f"x{i}" for i in range(COLUMNS)])
    return X, (X["x0"].to_numpy() + rng.normal(size=ROWS) > 0).astype(int)


def peak_of(work) -> tuple[object, float]:
    """What `work()` returns, and its traced peak in multiples of the float32 matrix."""
    tracemalloc.start()
    try:
        result = work()
        return result, tracemalloc.get_traced_memory()[1] / MATRIX
    finally:
        tracemalloc.stop()


def study(**options) -> Study:
    X, y = table()
    return Study(name="memory", task="classification", data=lambda: (X, y), space=Space(), folds=5, **options)


def test_loading_a_numeric_table_costs_about_its_matrix():
    spec = study()
    dataset, peak = peak_of(lambda: load_dataset(spec))
    assert dataset.X.dtype == np.float32 and dataset.X.shape == (ROWS, COLUMNS)
    assert peak < 1.6, peak  # the matrix, a float64 column and the split: no float64 copy of all of it


def test_the_shared_layout_of_a_numeric_table_costs_a_fraction_of_its_matrix():
    dataset = load_dataset(study())
    folds, peak = peak_of(lambda: make_folds(dataset, 5, 0, layout="shared"))
    assert folds.shared and folds.X_train.source.whole_rows
    # An all-numeric table's rows are its matrix, not a copy: the folds' row numbers, and
    # fitting one column at a time (a copy of the scaled columns made this 1.0x more).
    # (Ranked columns add each fold's probability tables, whose size does not grow with the
    # rows: measured on big tables by benchmarks/bench_table.py.)
    assert peak < 0.7, peak


def test_the_copies_cost_their_own_size_and_no_more():
    dataset = load_dataset(study())
    folds, peak = peak_of(lambda: make_folds(dataset, 5, 0, layout="copies"))
    copies = (folds.X_train.numel() + folds.X_val.numel()) * 4 / MATRIX  # 5 folds of train and val rows: ~4x
    blocks = 6 * BLOCK_VALUES * 8 / MATRIX  # a block of rows' float64 temporaries, whatever the table's size
    assert peak < copies + blocks + 0.3, (peak, copies, blocks)  # no second padded or stacked copy


def test_laying_out_the_folds_holds_each_row_s_bookkeeping_once():
    """Per fold and row, a row number, a target and a weight: written in place, not made per
    fold and stacked (each held twice), and the split's row numbers as int32, not int64. On a
    narrow table that bookkeeping is most of what the folds cost (3M rows: 300 MB)."""
    rows = 100_000
    rng = np.random.default_rng(0)
    X = rng.normal(size=(rows, 2)).astype(np.float32)
    y = (X[:, 0] + rng.normal(size=rows) > 0).astype(int)
    dataset = load_dataset(Study(name="narrow", task="classification", data=lambda: (X, y), space=Space(), folds=5))

    def lay_out():
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        folds = make_folds(dataset, 5, 0, layout="shared")
        kept, peak = tracemalloc.get_traced_memory()
        return folds, (kept - before) / rows, (peak - before) / rows

    tracemalloc.start()
    try:
        folds, kept, peak = lay_out()
    finally:
        tracemalloc.stop()
    assert folds.train_rows[0].dtype == np.int32
    # Kept per row: 5 folds' row numbers (int32, padded and not), targets (int64), weights
    # (float32), and each ranked cell's grid interval: about 90 bytes. Made and dropped while
    # laying out: measured 11-17 bytes per row (the code before: 84).
    assert peak - kept < 35, (peak, kept)

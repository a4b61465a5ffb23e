"""What a big table costs: preparing its folds, preparing them again, memory, and an epoch.

    python benchmarks/bench_table.py [--rows 500000,5000000] [--epoch-rows 500000]
                                     [--shapes mixed,numeric,categorical] [--layouts copies,shared,auto]

A synthetic table per size and shape, with a binary target, in Parquet: "mixed" (40 numeric
columns with 2 % missing values, 10 categorical columns of 10 levels), "numeric" (50 complete
numeric columns: the fast array path) and "categorical" (10 numeric columns, 40 categorical
columns of 20 levels). For each size, shape and fold layout ("auto": the one a sweep picks) ("copies": a
preprocessed copy per fold, the layout of sweeps <= 0.2; "shared": one copy of the rows,
`sweeps.data.shared`), one fresh process loads the table and prepares the 5 folds (a cache
miss: fitting and laying out), and a second fresh process gets them again, as a worker
or a rerun does (a cache hit). Each process reports its peak memory (ru_maxrss) against the
float32 design matrix (rows x preprocessed features x 4 bytes). Then one epoch of a fixed
net (depth 2, width 128, batch 512, 5 folds together; 2 epochs with their validation and
the final scoring, per epoch), timed, per million training rows;
`--epoch-rows` caps the rows of the layouts whose epochs are timed at full size (the copies
at 5 million rows would not fit this machine's memory anyway).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


EPOCHS = 2  # timed, with each epoch's validation and the final scoring of the training rows


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


SHAPES = {"mixed": (40, 0.02, 10, 10), "numeric": (50, 0.0, 0, 0), "categorical": (10, 0.02, 40, 20)}
# shape: (numeric columns, their missing share, categorical columns, levels of each)


def write_table(rows: int, path: Path, shape: str = "mixed") -> None:
    import pandas as pd

    n_numeric, missing, n_categorical, n_levels = SHAPES[shape]
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(rows, n_numeric)).astype(np.float32)
    if missing:
        numeric[rng.random(numeric.shape, dtype=np.float32) < missing] = np.nan
    frame = pd.DataFrame(numeric, columns=[f"n{i}" for i in range(n_numeric)])
    levels = np.array([f"level{j}" for j in range(n_levels)])
    for i in range(n_categorical):
        frame[f"c{i}"] = pd.Categorical.from_codes(rng.integers(0, n_levels, rows), levels)
    frame["target"] = (np.nan_to_num(numeric[:, 0]) + rng.normal(size=rows) > 0).astype(np.int8)
    frame.to_parquet(path, index=False)


def measure(path: Path, layout: str, epoch: bool) -> dict:
    """In a fresh process: load, get the folds (miss or hit, whichever the cache holds), maybe an epoch."""
    import torch

    from sweeps import Space, Study, Table
    from sweeps.data.cache import cached_folds
    from sweeps.data.dataset import load_dataset
    from sweeps.engine.config import NetConfig
    from sweeps.engine.train import train_folds

    torch.set_num_threads(os.cpu_count() or 1)
    os.environ["SWEEPS_FOLD_ROWS"] = layout  # "auto": as a sweep decides
    spec = Study(name="big", task="classification", data=Table(path, target="target"), space=Space())
    start = time.perf_counter()
    dataset = load_dataset(spec)
    loaded = time.perf_counter() - start
    load_peak = peak_mib()
    start = time.perf_counter()
    folds = cached_folds(dataset, spec.folds, spec.seed, scaling=spec.preprocessing)
    prepared = time.perf_counter() - start
    out = {"rows": len(dataset.y), "layout": "shared" if folds.shared else "copies", "load_s": loaded,
           "folds_s": prepared, "load_peak_mib": load_peak,
           "design_mib": len(dataset.y) * folds.n_features * 4 / 2**20, "features": folds.n_features}
    if epoch:
        config = NetConfig(depth=2, width=128, dropout=0.0, weight_decay=1e-5, lr=1e-3, batch_size=512)
        start = time.perf_counter()
        train_folds(folds, config, max_epochs=EPOCHS, patience=None, seed=0)
        out["epoch_s"] = (time.perf_counter() - start) / EPOCHS
        out["epoch_s_per_mrow"] = out["epoch_s"] / (folds.X_train.shape[1] / 1e6)
    out["peak_mib"] = peak_mib()
    return out


def run_child(*args: str, cache: str) -> dict:
    env = {**os.environ, "SWEEPS_CACHE_DIR": cache, "SWEEPS_CACHE_GB": "64"}
    done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise SystemExit(f"{args}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", default="500000,5000000", help="comma-separated table sizes")
    p.add_argument("--epoch-rows", type=int, default=500_000,
                   help="time the copies' epoch at sizes up to this (the shared epoch is timed at every size)")
    p.add_argument("--layouts", default="copies,shared")
    p.add_argument("--shapes", default="mixed", help=f"comma-separated, of {', '.join(SHAPES)}")
    p.add_argument("--measure", nargs=3, metavar=("PATH", "LAYOUT", "EPOCH"), help=argparse.SUPPRESS)
    p.add_argument("--write", nargs=3, metavar=("ROWS", "PATH", "SHAPE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.write:
        write_table(int(args.write[0]), Path(args.write[1]), args.write[2])
        print("{}")
        return
    if args.measure:
        print(json.dumps(measure(Path(args.measure[0]), args.measure[1], args.measure[2] == "1")))
        return

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for rows in [int(r) for r in args.rows.split(",")]:
            for shape in args.shapes.split(","):
                path = Path(tmp) / f"table-{rows}-{shape}.parquet"
                run_child("--write", str(rows), str(path), shape, cache=tmp)
                for layout in args.layouts.split(","):
                    if layout == "copies" and rows > args.epoch_rows:
                        print(f"{rows:>9} {shape:>11} {layout:>7}: skipped (5 preprocessed copies would not fit "
                              "this machine)")
                        continue
                    cache = str(Path(tmp) / f"cache-{rows}-{shape}-{layout}")
                    miss = run_child("--measure", str(path), layout, "1", cache=cache)
                    hit = run_child("--measure", str(path), layout, "0", cache=cache)
                    results.append((miss, hit))
                    design = miss["design_mib"]
                    print(f"{rows:>9} {shape:>11} {layout:>7} ({miss['layout']}): load {miss['load_s']:6.1f} s, "
                          f"folds prepared {miss['folds_s']:6.1f} s (again, from the cache, in a fresh process: "
                          f"{hit['folds_s']:5.2f} s); peak after loading {miss['load_peak_mib'] / design:4.2f}x, "
                          f"overall {miss['peak_mib']:7.0f} MiB = {miss['peak_mib'] / design:4.2f}x the "
                          f"{design:.0f} MiB float32 design matrix ({miss['features']} features; "
                          f"cache hit peak {hit['peak_mib'] / hit['design_mib']:4.2f}x); one epoch "
                          f"{miss['epoch_s']:6.1f} s = {miss['epoch_s_per_mrow']:5.2f} s per million training rows",
                          flush=True)
                path.unlink()
    base = [m for m, _ in results if m["layout"] == "copies"]
    if base:
        reference = min(base, key=lambda m: m["rows"])
        for miss, _ in results:
            if miss["layout"] == "shared":
                print(f"epoch time per row, shared at {miss['rows']} rows / copies at {reference['rows']} rows: "
                      f"{miss['epoch_s_per_mrow'] / reference['epoch_s_per_mrow']:.2f}x")


if __name__ == "__main__":
    main()

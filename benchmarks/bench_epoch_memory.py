"""Peak memory of one epoch on shared rows, by how many rows the transform works on at a time.

    python benchmarks/bench_epoch_memory.py [--rows 1000000] [--transform-rows 16384,4096] [--reps 3]

An all-numeric table (`bench_table.write_table`, "numeric": 50 columns, which "auto" ranks)
in Parquet; its folds prepared once in a cache (shared rows). Then, alternating, one fresh
process per setting and repetition: load, get the folds from the cache, train one epoch
(depth 2, width 128, batch 512, 5 folds together, with its validation and final scoring),
with `sweeps.data.shared.TRANSFORM_ROWS` set. Reported: each process's peak resident memory
(ru_maxrss, imports included) and the epoch's seconds; medians per setting.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def one_epoch(path: str, transform_rows: int) -> dict:
    from sweeps import Space, Study, Table
    from sweeps.data import shared
    from sweeps.data.cache import cached_folds
    from sweeps.data.dataset import load_dataset
    from sweeps.engine.config import NetConfig
    from sweeps.engine.train import train_folds

    shared.TRANSFORM_ROWS = transform_rows
    os.environ["SWEEPS_FOLD_ROWS"] = "shared"
    spec = Study(name="big", task="classification", data=Table(path, target="target"), space=Space())
    dataset = load_dataset(spec)
    folds = cached_folds(dataset, spec.folds, spec.seed, scaling=spec.preprocessing)
    config = NetConfig(depth=2, width=128, dropout=0.0, weight_decay=1e-5, lr=1e-3, batch_size=512)
    started = time.perf_counter()
    train_folds(folds, config, max_epochs=1, patience=None, seed=0)
    return {"epoch_s": time.perf_counter() - started,
            "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "design_mib": len(dataset.y) * folds.n_features * 4 / 2**20}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--transform-rows", default="16384,4096")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--child", nargs=2, metavar=("PATH", "ROWS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(one_epoch(args.child[0], int(args.child[1]))))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_table import write_table

    settings = [int(r) for r in args.transform_rows.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "numeric.parquet"
        write_table(args.rows, path, "numeric")
        env = {**os.environ, "SWEEPS_CACHE_DIR": str(Path(tmp) / "cache"), "SWEEPS_CACHE_GB": "64"}
        runs: dict[int, list[dict]] = {r: [] for r in settings}
        for rep in range(args.reps + 1):  # the first round fills the cache and is not counted
            for r in settings:
                done = subprocess.run([sys.executable, __file__, "--child", str(path), str(r)], env=env,
                                      capture_output=True, text=True, check=True)
                if rep:
                    runs[r].append(json.loads(done.stdout.strip().splitlines()[-1]))
    for r, results in runs.items():
        peaks, times = [x["peak_mib"] for x in results], [x["epoch_s"] for x in results]
        design = results[0]["design_mib"]
        each_peak = ", ".join(f"{v:.0f}" for v in peaks)
        each_time = ", ".join(f"{v:.1f}" for v in times)
        print(f"TRANSFORM_ROWS {r}: peak {statistics.median(peaks):.0f} MiB "
              f"({statistics.median(peaks) / design:.1f}x the {design:.0f} MiB matrix; each {each_peak}), "
              f"epoch {statistics.median(times):.1f} s (each {each_time})")

if __name__ == "__main__":
    main()

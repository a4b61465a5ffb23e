"""Peak resident memory by phase: imports, loading, preparing the folds, one epoch.

    python benchmarks/bench_memory_phases.py [--rows 3000000] [--shape numeric] [--layout auto]
                                             [--no-epoch] [--table PATH]

A synthetic Parquet table (`bench_table.write_table`: "numeric", "mixed" or "categorical"),
then one fresh process, cache cold: the process's resident memory is sampled every
millisecond by a thread and its maximum kept per phase (imports; `load_dataset`;
`cached_folds`, a miss: fitting, laying out and writing the cache entry; one epoch of a fixed
net, depth 2, width 128, batch 512, 5 folds together, with its validation and final scoring).
Printed: each phase's peak in MiB and in multiples of the float32 design matrix (rows x
preprocessed features x 4 bytes), the figure #27 bounds at 2x.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def resident_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(path: str, layout: str, epoch: bool) -> dict:
    """In this (fresh) process: each phase's peak resident memory."""
    phase, peaks = ["imports"], {}

    def sample() -> None:
        while True:
            now, name = resident_mib(), phase[0]
            peaks[name] = max(peaks.get(name, 0.0), now)
            time.sleep(0.001)

    threading.Thread(target=sample, daemon=True).start()
    from sweeps import Space, Study, Table
    from sweeps.data.cache import cached_folds
    from sweeps.data.dataset import load_dataset
    from sweeps.engine.config import NetConfig
    from sweeps.engine.train import train_folds

    def enter(name: str) -> None:
        time.sleep(0.02)  # the sampler sees the end of the last phase
        phase[0] = name

    os.environ["SWEEPS_FOLD_ROWS"] = layout
    spec = Study(name="big", task="classification", data=Table(path, target="target"), space=Space())
    enter("load")
    dataset = load_dataset(spec)
    enter("folds")
    folds = cached_folds(dataset, spec.folds, spec.seed, scaling=spec.preprocessing)
    out = {"rows": len(dataset.y), "features": folds.n_features, "layout": "shared" if folds.shared else "copies",
           "design_mib": len(dataset.y) * folds.n_features * 4 / 2**20}
    if epoch:
        enter("epoch")
        config = NetConfig(depth=2, width=128, dropout=0.0, weight_decay=1e-5, lr=1e-3, batch_size=512)
        started = time.perf_counter()
        train_folds(folds, config, max_epochs=1, patience=None, seed=0)
        out["epoch_s"] = time.perf_counter() - started
    enter("end")
    return {**out, "peaks_mib": {name: value for name, value in peaks.items() if name != "end"}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=3_000_000)
    p.add_argument("--shape", default="numeric", help="numeric, mixed or categorical (bench_table.py)")
    p.add_argument("--layout", default="auto", help="auto (as a sweep), copies or shared")
    p.add_argument("--no-epoch", action="store_true", help="loading and the folds only")
    p.add_argument("--table", help="an existing Parquet table with a 'target' column, instead of a synthetic one")
    p.add_argument("--child", nargs=3, metavar=("PATH", "LAYOUT", "EPOCH"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], args.child[1], args.child[2] == "1")))
        return
    sys.path.insert(0, str(Path(__file__).parent))
    from bench_table import write_table

    with tempfile.TemporaryDirectory() as tmp:
        path = args.table
        if path is None:
            path = str(Path(tmp) / "table.parquet")
            write_table(args.rows, Path(path), args.shape)
        env = {**os.environ, "SWEEPS_CACHE_DIR": str(Path(tmp) / "cache"), "SWEEPS_CACHE_GB": "64"}
        done = subprocess.run([sys.executable, __file__, "--child", path, args.layout, "0" if args.no_epoch else "1"],
                              capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise SystemExit(done.stderr[-3000:])
        result = json.loads(done.stdout.strip().splitlines()[-1])
    design = result["design_mib"]
    print(f"{result['rows']:,} rows x {result['features']} features ({args.shape}, layout {result['layout']}): "
          f"float32 design matrix {design:.0f} MiB" + (f"; one epoch {result['epoch_s']:.1f} s" if "epoch_s" in result
                                                       else ""))
    print("| phase | peak resident memory | x the matrix |")
    print("|---|---|---|")
    for name, value in result["peaks_mib"].items():
        print(f"| {name} | {value:,.0f} MiB | {value / design:.2f}x |")


if __name__ == "__main__":
    main()

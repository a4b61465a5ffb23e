"""Peak memory of predicting a big table with periodic embeddings, by chunk budget.

    python benchmarks/bench_predict_memory.py [--rows 200000] [--reps 2]

Five fold-models (d1 w64) with the default periodic embeddings (16 frequencies, 16 outputs)
on 32 numeric columns predict `--rows` rows, each in a fresh process: once with
`StackedMLP.predict`'s memory budget (`PREDICT_BYTES`), once without it (one chunk of up to
65,536 rows whatever it holds, the behaviour before 2026-12-05). Printed: the peak resident
memory above what the process held before predicting, and the seconds, per repetition,
the variants alternating.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time

import torch


def child(variant: str, rows: int) -> None:
    from sweeps.engine import model

    if variant == "unbounded":
        model.PREDICT_BYTES = 2**62
    torch.manual_seed(0)
    net = model.StackedMLP.init([0, 1, 2, 3, 4], n_in=32, n_out=2, depth=1, width=64, n_numeric=32,
                                embedding=(16, 0.5, 16))
    x = torch.randn(5, rows, 32)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    net.predict(x)
    seconds = time.perf_counter() - started
    peak = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    print(f"| {variant} | {peak:.0f} MiB | {seconds:.2f} s |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.rows)
        return
    print(f"Predicting {args.rows} rows, 5 folds, embeddings on 32 columns (peak above the input):")
    print("| chunks | peak memory | time |")
    print("|---|---|---|")
    for _ in range(args.reps):
        for variant in ("unbounded", "budget"):
            subprocess.run([sys.executable, __file__, "--child", variant, "--rows", str(args.rows)], check=True)


if __name__ == "__main__":
    main()

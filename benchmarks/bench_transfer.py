"""Transfer from red to white wines: training from scratch, fine-tuning, feature extraction.

    python benchmarks/bench_transfer.py [--seeds 0,1,2] [--trials 20] [--white-rows 400] [--red-trials 25]

For each seed: the quality benchmark's template (`bench_quality.study`) sweeps the 1,599
red wines and `evaluate` saves the chosen configuration refitted as one net (the source
model). Then `--white-rows` white wines (a seeded sample) are the development rows of four
sweeps that differ only in how the net starts: from scratch (the template's space), fine-
tuning every layer of the red model (`init_from`, `freeze=0`), feature extraction (the red
model's hidden layers and embeddings kept as loaded, only the output layer trained:
`freeze=` its depth), and `freeze` searched between the two. Every sweep is scored on the
same held-out rows: all the other white wines (`test_data`, about 4,500 rows, disjoint from
the development rows). Medians over seeds of the held-out RMSE, in quality points.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sweeps import Space, Study, Table, load_model
from sweeps._cli import quiet_optuna
from sweeps.data.dataset import load_dataset
from sweeps.results.evaluate import evaluate_study
from sweeps.sweep.optimize import run_study

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_quality import DATA, RANGES, WINE, study  # noqa: E402  (the quality benchmark's template)

WHITE = Table(DATA / "winequality-white.csv.gz", target="quality", columns=WINE)


def white_split(rows: int, seed: int):
    """`rows` white wines for development, every other white wine held out."""
    X, y = WHITE()
    dev = np.zeros(len(y), dtype=bool)
    dev[np.random.default_rng(seed).choice(len(y), rows, replace=False)] = True
    return (lambda: (X[dev], y[dev])), (lambda: (X[~dev], y[~dev]))


def sweep_and_score(spec: Study, folder: str, model_path: str | None = None) -> dict:
    url = f"sqlite:///{folder}/{spec.name}.db"
    dataset = load_dataset(spec)
    started = time.perf_counter()
    run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    entry, _ = evaluate_study(spec, dataset, storage=url, model_path=model_path or f"{folder}/{spec.name}.pt", err=io.StringIO())
    return {"rmse": entry["metric"], "cv_loss": entry["cv_loss"], "seconds": time.perf_counter() - started,
            "params": entry["params"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--trials", type=int, default=20)
    p.add_argument("--white-rows", type=int, default=400)
    p.add_argument("--red-trials", type=int, default=25, help="trials of the red sweep (the source model)")
    p.add_argument("--json", help="append every result as a JSON line to this file")
    args = p.parse_args()
    quiet_optuna()
    by_start: dict[str, list[dict]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            red = study("wine_red", seed, args.red_trials, {"final_model": "refit"})  # one net to start from
            source = f"{folder}/red.pt"
            red_result = sweep_and_score(red, folder, source)
            depth = load_model(source).net.architecture()["depth"]
            dev, held_out = white_split(args.white_rows, seed)
            white = dict(task="regression", data=dev, test_data=held_out, folds=5, max_epochs=100, patience=10,
                         n_trials=args.trials, seed=seed, final_model="refit")
            tuning = dict(dropout=RANGES["dropout"], weight_decay=RANGES["weight_decay"], lr=(1e-5, 3e-3),
                          batch_size=32)
            starts = {
                "from scratch": Study(name="scratch", space=Space(**RANGES, batch_size=32), **white),
                "fine-tuning (freeze=0)": Study(name="fine", init_from=source, space=Space(**tuning), **white),
                f"feature extraction (freeze={depth})": Study(name="extract", init_from=source,
                                                               space=Space(**tuning, freeze=depth), **white),
                f"freeze=(0, {depth}) searched": Study(name="searched", init_from=source,
                                                        space=Space(**tuning, freeze=(0, depth)), **white),
            }
            for label, spec in starts.items():
                result = sweep_and_score(spec, folder)
                result.update(start=label.split(" (")[0] if "searched" not in label else "searched", label=label,
                              seed=seed, red_rmse=red_result["rmse"], red_depth=depth)
                print(json.dumps(result), file=sys.stderr, flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(result) + "\n")
                by_start.setdefault(result["start"], []).append(result)
    print(f"\n{args.trials} trials per white sweep, {args.white_rows} white wines to learn from; held out: the "
          f"other white wines; medians over seeds {args.seeds}\n")
    print("| start | held-out RMSE | CV loss | sweep + evaluate | RMSE per seed |")
    print("|---|---|---|---|---|")
    for start, results in by_start.items():
        per_seed = " / ".join(f"{r['rmse']:.4f}" + ("" if start == "from scratch" else
                                                     f" (freeze {r['params'].get('freeze', 0)})") for r in results)
        print(f"| {start} | {statistics.median(r['rmse'] for r in results):.4f} | "
              f"{statistics.median(r['cv_loss'] for r in results):.4f} | "
              f"{statistics.median(r['seconds'] for r in results):.0f} s | {per_seed} |")


if __name__ == "__main__":
    main()

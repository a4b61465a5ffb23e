"""Imbalanced classes: class weights against over- and under-sampling, on the held-out rows.

    python benchmarks/bench_imbalance.py [--datasets mammography] [--seeds 0,1,2] [--trials 25]
                                         [--json results.jsonl]

For each dataset and seed, the quality benchmark's study template (`bench_quality.study`:
the same ranges, budget rule and defaults for every dataset) is swept once per remedy,
changing only that remedy: none; `class_weight="balanced"`; `resampling="over"`;
`resampling="under"`; and all of them searched (`class_weight` and `resampling` as
Categoricals). Each sweep's declared final model is evaluated on the same held-out rows
(a seeded, stratified 20 %); the table gives the medians over seeds of balanced accuracy,
macro-F1 and ROC-AUC there (the decision is the most probable class, threshold 0.5), and
the sweep's wall time. Every remedy but "none" scores its trials by the class-balanced
validation loss (`Study.balanced_validation`), as a study that uses it does.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys

import torch

from sweeps import Categorical
from sweeps._cli import quiet_optuna

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from bench_quality import study, sweep  # noqa: E402  (the same template as the quality benchmark)

REMEDIES = {
    "none": {},
    'class_weight="balanced"': dict(class_weight="balanced"),
    'resampling="over"': dict(resampling="over"),
    'resampling="under"': dict(resampling="under"),
    "both searched": dict(class_weight=Categorical(["none", "balanced"]),
                          resampling=Categorical(["none", "over", "under"])),
}
METRICS = ("balanced_accuracy", "macro_f1", "roc_auc", "accuracy")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--datasets", default="mammography")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--trials", type=int, default=25)
    p.add_argument("--remedies", default=",".join(REMEDIES))
    p.add_argument("--json", help="append every result as a JSON line to this file")
    args = p.parse_args()
    quiet_optuna()
    rows = []
    for name in args.datasets.split(","):
        for remedy in args.remedies.split(","):
            results = []
            for seed in (int(s) for s in args.seeds.split(",")):
                result = sweep(study(name, seed, args.trials, REMEDIES[remedy]))
                result.update(dataset=name, remedy=remedy, seed=seed)
                print(json.dumps(result), file=sys.stderr, flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps(result) + "\n")
                results.append(result)
            rows.append((name, remedy, results))
    print(f"\n{args.trials} trials per sweep; medians over seeds {args.seeds}; torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads\n")
    print("| dataset | remedy | balanced accuracy | macro-F1 | ROC-AUC | accuracy | sweep wall time | "
          "balanced accuracy per seed |")
    print("|---|---|---|---|---|---|---|---|")
    for name, remedy, results in rows:
        median = {m: statistics.median(r[m] for r in results) for m in METRICS}
        seconds = statistics.median(r["sweep_seconds"] for r in results)
        per_seed = " / ".join(f"{r['balanced_accuracy']:.4f}" for r in results)
        print(f"| {name} | {remedy} | {median['balanced_accuracy']:.4f} | {median['macro_f1']:.4f} | "
              f"{median['roc_auc']:.4f} | {median['accuracy']:.4f} | {seconds:.0f} s | {per_seed} |")


if __name__ == "__main__":
    main()

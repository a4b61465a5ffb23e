"""The engine of this checkout against the engine of another revision, in the same run.

    python benchmarks/bench_ab.py --against REV [--pairs 5] [--epochs 4]

For a refactor that must not slow the hot path (the training loop): each configuration is
timed in a fresh process of each tree, A then B, `--pairs` times (the trees alternate, so a
busy machine slows both alike), and the median of each side is printed with B/A. A = REV
(checked out into a temporary git worktree), B = this checkout. One timing = one trial of
`train_folds` on digits' 5 folds, fixed epochs, after one warm-up trial in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CONFIGS = {  # name: NetConfig keywords (depth, width, dropout, weight_decay, lr and the rest)
    "d1 w32": dict(depth=1, width=32),
    "d2 w128": dict(depth=2, width=128),
    "d4 w512": dict(depth=4, width=512),
    "embeddings": dict(depth=2, width=64, embedding="periodic", n_frequencies=16, embedding_dim=16),
    "ensemble 8": dict(depth=2, width=64, ensemble=8),
    "noise + smoothing + clipping": dict(depth=2, width=64, noise=0.1, label_smoothing=0.1, grad_clip=1.0),
    "re-sampling over": dict(depth=2, width=64, resampling="over"),
    "class weights": dict(depth=2, width=64, class_weight="balanced"),
}

# Run in the child, with the tree's src/ first on sys.path. Both layouts are read: the flat
# modules of sweeps <= 0.2 and the subpackages after (so that a revision of either compares).
CHILD = r"""
import json, sys, time
import torch
from sklearn.datasets import load_digits
config_kwargs, epochs = json.loads(sys.argv[1]), int(sys.argv[2])
torch.set_num_threads(2)
try:
    from sweeps.data.dataset import load_dataset
    from sweeps.data.folds import make_folds
    from sweeps.engine.config import NetConfig
    from sweeps.engine.train import train_folds
except ImportError:
    from sweeps.data import load_dataset
    from sweeps.folds import make_folds
    from sweeps.train import NetConfig, train_folds
from sweeps import Space, Study
spec = Study(name="ab", task="classification", data=lambda: load_digits(return_X_y=True), space=Space(), folds=5)
folds = make_folds(load_dataset(spec), folds=5, seed=0, layout="copies") if "layout" in make_folds.__code__.co_varnames \
    else make_folds(load_dataset(spec), folds=5, seed=0)
config = NetConfig(**{"dropout": 0.2, "weight_decay": 1e-4, "lr": 1e-3, "batch_size": 64, **config_kwargs})
train_folds(folds, config, max_epochs=1, patience=None, seed=1)  # warm-up
started = time.perf_counter()
result = train_folds(folds, config, max_epochs=epochs, patience=None, seed=0)
print(json.dumps({"seconds": time.perf_counter() - started, "loss": result.cv_loss}))
"""


def run(tree: Path, config: dict, epochs: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "SWEEPS_CACHE_DIR": "off"}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(config), str(epochs)], env=env, cwd=tree,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--against", required=True, metavar="REV", help="the revision to compare with (A)")
    p.add_argument("--pairs", type=int, default=5)
    p.add_argument("--epochs", type=int, default=4)
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="sweeps-ab-") as folder:
        other = Path(folder) / "a"
        subprocess.run(["git", "worktree", "add", "--detach", "-q", str(other), args.against], cwd=ROOT, check=True)
        try:
            print(f"A = {args.against}, B = this checkout; digits, 5 folds, {args.epochs} epochs, batch 64, "
                  f"medians of {args.pairs} alternating pairs of fresh processes")
            print("| configuration | A | B | B/A | same loss |")
            print("|---|---|---|---|---|")
            for name, config in CONFIGS.items():
                a, b = [], []
                for _ in range(args.pairs):
                    a.append(run(other, config, args.epochs))
                    b.append(run(ROOT, config, args.epochs))
                ta, tb = (statistics.median(r["seconds"] for r in side) for side in (a, b))
                same = abs(a[0]["loss"] - b[0]["loss"]) <= 1e-5 * max(1.0, abs(a[0]["loss"]))
                print(f"| {name} | {ta:.3f} s | {tb:.3f} s | {tb / ta:.2f} | {'yes' if same else 'NO'} |", flush=True)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(other)], cwd=ROOT, check=False)


if __name__ == "__main__":
    main()

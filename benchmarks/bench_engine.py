"""Time one trial: the idiomatic PyTorch k-fold loop against the sweeps engine, same run.

    python benchmarks/bench_engine.py [--reps 5] [--device cpu|cuda] [--quick]

One trial = k=5 folds, fixed epochs (early stopping off), dropout 0.2, AdamW(lr=1e-3,
wd=1e-4), batch 64, on the same pre-scaled fold data for both variants:
  (a) idiomatic: what Optuna's PyTorch example and most tutorials do: a DataLoader over a
      TensorDataset, nn.Sequential(Linear, ReLU, Dropout, ...), folds one after another;
  (b) sweeps: `train_folds`, all folds stacked, hand-written backward, fused AdamW.
Variants alternate within each repetition; medians are printed with the ratio a/b, the
final mean validation loss of both (equal quality), and each variant as a multiple of the
arithmetic floor: the trial's FLOPs over this machine's measured fp32 matmul throughput.
A second table measures what removing stopped folds from the stack saves against masking;
a third, what each ingredient of the recipe costs, as a ratio to the plain trial (sweeps
engine, same data and epochs): periodic embeddings, shared-weight members, label smoothing,
the cosine schedule, gradient clipping, and all of them together; then category embeddings
against one-hot (adult) and the regression-only options against squared error (California).
The last (`--only grouped`): 8 trials of one shape trained in one stack against the same 8
one after another, timed in pairs (alone, then together), the median of the pairs' ratios.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch
from sklearn.datasets import load_digits, make_classification

from sweeps.data.dataset import load_dataset
from sweeps.data.folds import Folds, make_folds
from sweeps.engine.model import StackedMLP
from sweeps.spec.space import Space
from sweeps.spec.study import Study
from sweeps.engine.config import NetConfig
from sweeps.engine.train import train_folds, train_trials

CONFIGS = [(1, 32), (2, 128), (4, 512)]


def dataset_folds(name: str, device: str, layout: str = "copies") -> Folds:
    if name == "digits":
        data = lambda: load_digits(return_X_y=True)  # noqa: E731
    else:
        data = lambda: make_classification(n_samples=20_000, n_features=50, n_informative=30,  # noqa: E731
                                           n_classes=5, random_state=0)
    spec = Study(name=name, task="classification", data=data, space=Space(), folds=5, seed=0)
    return make_folds(load_dataset(spec), folds=5, seed=0, device=device, layout=layout)


def idiomatic_trial(folds: Folds, config: NetConfig, epochs: int, seed: int) -> float:
    """The tutorial loop: DataLoader, nn.Module, folds in sequence. Returns mean val loss."""
    torch.manual_seed(seed)
    device = folds.X_train.device
    losses = []
    for f in range(folds.k):
        real = folds.train_weight[f].bool()
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(folds.X_train[f][real], folds.y_train[f][real]),
            batch_size=config.batch_size, shuffle=True)
        layers, width_in = [], folds.n_features
        for _ in range(config.depth):
            layers += [torch.nn.Linear(width_in, config.width), torch.nn.ReLU(), torch.nn.Dropout(config.dropout)]
            width_in = config.width
        model = torch.nn.Sequential(*layers, torch.nn.Linear(width_in, folds.n_outputs)).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        criterion = torch.nn.CrossEntropyLoss()
        for _ in range(epochs):
            model.train()
            for xb, yb in loader:
                optimizer.zero_grad()
                criterion(model(xb), yb).backward()
                optimizer.step()
        model.eval()
        with torch.no_grad():
            real_val = folds.val_weight[f].bool()
            losses.append(criterion(model(folds.X_val[f][real_val]), folds.y_val[f][real_val]).item())
    return float(np.mean(losses))


def trial_flops(folds: Folds, config: NetConfig, epochs: int) -> float:
    """Matmul FLOPs of one trial: 6 per weight per training row (fwd + 2 bwd), 2 per val row."""
    sizes = [folds.n_features] + [config.width] * config.depth + [folds.n_outputs]
    weights = sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))
    n_train = int(folds.train_weight.sum())
    n_val = int(folds.val_weight.sum())
    return epochs * weights * (6 * n_train + 2 * n_val)


def matmul_throughput(device: str) -> float:
    """Measured fp32 matmul FLOP/s on this machine with the current thread count."""
    a = torch.randn(2048, 2048, device=device)
    b = torch.randn(2048, 2048, device=device)
    rates = []
    for _ in range(5):
        sync(device)
        start = time.perf_counter()
        for _ in range(3):
            a @ b
        sync(device)
        rates.append(3 * 2 * 2048**3 / (time.perf_counter() - start))
    return max(rates)


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, float]:
    sync(device)
    start = time.perf_counter()
    value = fn()
    sync(device)
    return time.perf_counter() - start, value


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--quick", action="store_true", help="digits only, 3 repetitions")
    p.add_argument("--only", choices=("speed", "compact", "ingredients", "categories", "regression", "grouped"), help="run one table")
    args = p.parse_args()
    if args.only in (None, "speed"):
        speed(args)
    if args.only in (None, "compact"):
        stopped_folds(args)
    if args.only in (None, "ingredients"):
        ingredients(args)
        embedding_columns(args)
    if args.only in (None, "ingredients", "categories"):
        category_embeddings(args)
    if args.only in (None, "ingredients", "regression"):
        regression_ingredients(args)
    if args.only in (None, "grouped"):
        grouped(args)


def speed(args) -> None:
    reps = 3 if args.quick else args.reps
    flops_per_s = matmul_throughput(args.device)
    print(f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"fp32 matmul {flops_per_s / 1e9:.0f} GFLOP/s; k=5, batch 64, dropout 0.2, "
          f"early stopping off; medians of {reps}\n")
    print("| data | config | epochs | idiomatic (a) | sweeps (b) | a/b | floor | a/floor | b/floor "
          "| val loss a | val loss b |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    datasets = [("digits", 20)] if args.quick else [("digits", 20), ("synthetic 20000x50", 3)]
    for name, epochs in datasets:
        folds = dataset_folds(name, args.device)
        for depth, width in CONFIGS:
            config = NetConfig(depth, width, 0.2, 1e-4, 1e-3, batch_size=64)
            run_a = lambda: idiomatic_trial(folds, config, epochs, seed=0)  # noqa: E731
            # The last epoch's mean validation loss, like (a); a sweep would keep each fold's best.
            run_b = lambda: train_folds(folds, config, max_epochs=epochs, patience=None, seed=0).curve_val[-1]  # noqa: E731
            run_a(), run_b()  # warm-up: allocator, thread pools, lazy kernels
            times_a, times_b, loss_a, loss_b = [], [], [], []
            for _ in range(reps):
                t, v = timed(run_a, args.device)
                times_a.append(t), loss_a.append(v)
                t, v = timed(run_b, args.device)
                times_b.append(t), loss_b.append(v)
            a, b = statistics.median(times_a), statistics.median(times_b)
            floor = trial_flops(folds, config, epochs) / flops_per_s
            print(f"| {name} | d{depth} w{width} | {epochs} | {a:.3f} s | {b:.3f} s | {a / b:.1f}x "
                  f"| {floor:.3f} s | {a / floor:.1f} | {b / floor:.1f} | {np.mean(loss_a):.4f} "
                  f"| {np.mean(loss_b):.4f} |", flush=True)



def stopped_folds(args) -> None:
    reps = 3 if args.quick else args.reps
    print("\nStopped folds (digits, early stopping with patience 3, at most 60 epochs, lr 3e-3):")
    print("| config | compact (remove stopped folds) | mask (keep computing) | mask/compact |")
    print("|---|---|---|---|")
    folds = dataset_folds("digits", args.device)
    for depth, width in CONFIGS:
        config = NetConfig(depth, width, 0.2, 1e-4, 3e-3, batch_size=64)
        compact = lambda: train_folds(folds, config, max_epochs=60, patience=3, seed=0, compact=True).cv_loss  # noqa: E731
        mask = lambda: train_folds(folds, config, max_epochs=60, patience=3, seed=0, compact=False).cv_loss  # noqa: E731
        compact(), mask()
        tc, tm = [], []
        for _ in range(reps):
            tc.append(timed(compact, args.device)[0])
            tm.append(timed(mask, args.device)[0])
        c, m = statistics.median(tc), statistics.median(tm)
        print(f"| d{depth} w{width} | {c:.3f} s | {m:.3f} s | {m / c:.2f}x |", flush=True)


INGREDIENTS = {
    "plain": {},
    # digits has 64 numeric columns: more than embedding="auto" embeds (32), so this is a worst case
    "periodic embeddings (16 freq., dim 16; all 64 columns)": dict(embedding="periodic", n_frequencies=16,
                                                                   embedding_dim=16),
    "periodic embeddings (8 freq., dim 4; all 64 columns)": dict(embedding="periodic", n_frequencies=8,
                                                                 embedding_dim=4),
    "members E=4": dict(ensemble=4),
    "members E=16": dict(ensemble=16),
    "members E=32": dict(ensemble=32),
    "label smoothing 0.1": dict(label_smoothing=0.1),
    "beta2 0.95": dict(beta2=0.95),
    "cosine schedule": dict(schedule="cosine"),
    "gradient clipping 1.0": dict(grad_clip=1.0),
    # digits' classes are near balance, so an epoch keeps its length: this is the cost of the
    # per-epoch draw. On imbalanced data an epoch is 2 x the largest ("over") or the smallest
    # ("under") class, and the time per epoch scales with it.
    "re-sampling, over": dict(resampling="over"),
    "re-sampling, under": dict(resampling="under"),
    # transfer (Study(init_from=)): every fold starts from one loaded net; freeze keeps its first layer
    "transfer: fine-tuning": dict(transfer=True),
    "transfer: freeze 1 (feature extraction)": dict(transfer=True, freeze=1),
    # Study(groups=): each validation row's source (here 3 groups, rows dealt round-robin)
    "groups (3), monitored": dict(groups=True),
    "groups (3), early_stopping=worst_group": dict(groups=True, worst_group=True),
    # Space(importance="density_ratio") with Study(target_data=): a weight per training row
    "importance weights": dict(weights=True, importance="density_ratio"),
    # the big-table layout (sweeps.data.shared; "auto" picks it above 2 GiB of fold copies): one copy
    # of the rows, each fold's preprocessing applied as the rows are read (every epoch)
    "one shared copy of the rows": dict(shared=True),
    # Space(adversarial=λ) with Study(target_data=): a batch of target rows rides along every
    # step, and a domain classifier (hidden layer of 64) learns on both (sweeps.engine.domain)
    "domain-adversarial (DANN)": dict(target=True, adversarial=0.5),
}
SPECIAL = ("transfer", "groups", "weights", "shared", "target")  # not NetConfig fields: how the trial is set up


def ingredients(args) -> None:
    """Seconds per trial of each ingredient, and the ratio to the plain trial, same run.

    The repetitions go round-robin over the ingredients, so a machine that speeds up or slows
    down during the run (frequency scaling, a neighbour) moves every row alike, not the rows
    measured last.
    """
    reps = 3 if args.quick else args.reps
    print(f"\nCost of each ingredient (digits, 5 folds, 20 epochs, batch 64, dropout 0.2; medians of {reps}, "
          "interleaved):")
    print("| ingredient | d1 w32 | ratio | d2 w128 | ratio |")
    print("|---|---|---|---|---|")
    folds = dataset_folds("digits", args.device)
    sources = torch.arange(folds.X_val.shape[1], device=folds.X_val.device).remainder(3).expand(folds.k, -1)
    grouped = dataclasses.replace(folds, val_groups=torch.where(folds.val_weight > 0, sources, -1),
                                  group_names=("a", "b", "c"))
    generator = torch.Generator().manual_seed(0)
    weighted = dataclasses.replace(folds, train_importance=(torch.rand(folds.X_train.shape[:2], generator=generator)
                                                            + 0.5).to(folds.X_train.device))
    shared = dataset_folds("digits", args.device, layout="shared")
    targeted = dataclasses.replace(folds, target_X=folds.X_val[:, :300].clone())  # 300 rows stand in for them
    rows: dict[str, list[float]] = {name: [] for name in INGREDIENTS}
    for depth, width in CONFIGS[:2]:
        runs = {}
        for name, options in INGREDIENTS.items():
            net_options = {k: v for k, v in options.items() if k not in SPECIAL}
            config = NetConfig(depth, width, 0.2, 1e-4, 1e-3, batch_size=64, **net_options)
            init = StackedMLP.init([1], folds.n_features, folds.n_outputs, depth, width, 0.2, args.device) \
                if options.get("transfer") else None
            data = grouped if options.get("groups") else weighted if options.get("weights") else \
                shared if options.get("shared") else targeted if options.get("target") else folds
            runs[name] = lambda config=config, init=init, data=data: train_folds(
                data, config, max_epochs=20, patience=None, seed=0, init=init)
            runs[name]()  # warm-up
        seconds: dict[str, list[float]] = {name: [] for name in INGREDIENTS}
        for _ in range(reps):
            for name, run in runs.items():
                seconds[name].append(timed(run, args.device)[0])
        for name in INGREDIENTS:
            rows[name].append(statistics.median(seconds[name]))
    for name, times in rows.items():
        cells = " | ".join(f"{t:.3f} s | {t / p:.2f}x" for t, p in zip(times, rows["plain"]))
        print(f"| {name} | {cells} |", flush=True)


def category_embeddings(args) -> None:
    """Learned category embeddings (`Space(category_dim=d)`) against one-hot inputs: seconds per
    trial on adult's 8 categorical columns (one-hot: 100 columns), ratio to one-hot, same run."""
    from pathlib import Path

    from sweeps import Table

    reps = 3 if args.quick else args.reps
    data = Path(__file__).resolve().parent.parent / "studies" / "data"
    columns = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
               "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week", "native-country",
               "income"]
    spec = Study(name="adult", task="classification", data=Table(data / "adult-train.csv.gz", target="income",
                                                                 columns=columns), space=Space(), folds=5, seed=0)
    folds = make_folds(load_dataset(spec), folds=5, seed=0, device=args.device)
    print(f"\nCategory embeddings against one-hot (adult, {folds.n_features - folds.n_numeric} one-hot columns of "
          f"8 categorical, {folds.n_numeric} numeric; 5 folds, batch 256, 3 epochs; medians of {reps}, interleaved):")
    print("| config | one-hot | category_dim=8 | ratio | category_dim=16 | ratio |")
    print("|---|---|---|---|---|---|")
    for depth, width in CONFIGS[:2]:
        t = interleaved({dim: NetConfig(depth, width, 0.2, 1e-4, 1e-3, batch_size=256, embedding="none",
                                        category_dim=dim) for dim in (0, 8, 16)}, folds, reps, args.device)
        print(f"| d{depth} w{width} | {t[0]:.3f} s | {t[8]:.3f} s | {t[8] / t[0]:.2f}x | {t[16]:.3f} s | "
              f"{t[16] / t[0]:.2f}x |", flush=True)


def interleaved(configs: dict, folds: Folds, reps: int, device: str) -> dict:
    """Median seconds of a 3-epoch trial of each configuration, repetitions going round-robin
    over them (a machine that speeds up or slows down moves every one alike), after a warm-up."""
    runs = {key: (lambda config=config: train_folds(folds, config, max_epochs=3, patience=None, seed=0))
            for key, config in configs.items()}
    for run in runs.values():
        run()
    seconds: dict = {key: [] for key in runs}
    for _ in range(reps):
        for key, run in runs.items():
            seconds[key].append(timed(run, device)[0])
    return {key: statistics.median(v) for key, v in seconds.items()}


def regression_ingredients(args) -> None:
    """The regression-only options (`Space(huber=)`) against squared error: seconds per trial on
    California housing (20,640 rows, 8 numeric columns), ratio to squared error, same run."""
    from pathlib import Path

    from sweeps import Table

    reps = 3 if args.quick else args.reps
    data = Path(__file__).resolve().parent.parent / "studies" / "data" / "california_housing.csv.gz"
    spec = Study(name="california", task="regression", data=Table(data, target="median_house_value"),
                 space=Space(), folds=5, seed=0)
    folds = make_folds(load_dataset(spec), folds=5, seed=0, device=args.device)
    print(f"\nRegression options against squared error (California, 5 folds, batch 256, 3 epochs, no embeddings; "
          f"medians of {reps}, interleaved):")
    print("| config | squared error | Huber δ=1 | ratio |")
    print("|---|---|---|---|")
    for depth, width in CONFIGS[:2]:
        t = interleaved({huber: NetConfig(depth, width, 0.2, 1e-4, 1e-3, batch_size=256, embedding="none",
                                          huber=huber) for huber in (0.0, 1.0)}, folds, reps, args.device)
        print(f"| d{depth} w{width} | {t[0.0]:.3f} s | {t[1.0]:.3f} s | {t[1.0] / t[0.0]:.2f}x |", flush=True)


# frequencies x outputs per column: the default, and a smaller size (cheaper, and worse on California:
# docs/benchmarks.md, "The periodic embeddings' cost")
EMBEDDING_SIZES = {"16 x 16 (the default)": (16, 16), "8 x 4": (8, 4)}


def embedding_columns(args) -> None:
    """The embeddings' cost grows with the numeric columns they embed: ratio to the same trial
    without, for each size (frequencies x outputs per column), repetitions taken round-robin."""
    reps = 3 if args.quick else args.reps
    print(f"\nPeriodic embeddings by numeric columns (synthetic 20000 rows, 5 folds, d1 w64, batch 256, "
          f"3 epochs; medians of {reps}, ratio to the same trial without embeddings):")
    print("| numeric columns | without | " + " | ".join(EMBEDDING_SIZES) + " |")
    print("|---|---|" + "---|" * len(EMBEDDING_SIZES))
    for columns in (6, 14, 32):
        data = lambda: make_classification(n_samples=20_000, n_features=columns, n_informative=columns // 2,  # noqa: E731
                                           n_classes=2, random_state=0)
        spec = Study(name="columns", task="classification", data=data, space=Space(), folds=5, seed=0)
        folds = make_folds(load_dataset(spec), folds=5, seed=0, device=args.device)
        configs = [NetConfig(1, 64, 0.2, 1e-4, 1e-3, batch_size=256, embedding="none")] + [
            NetConfig(1, 64, 0.2, 1e-4, 1e-3, batch_size=256, embedding="periodic", n_frequencies=n, embedding_dim=d)
            for n, d in EMBEDDING_SIZES.values()]
        runs = [lambda c=c: train_folds(folds, c, max_epochs=3, patience=None, seed=0) for c in configs]
        times = [[] for _ in runs]
        for run in runs:
            run()
        for _ in range(reps):
            for run, t in zip(runs, times):
                t.append(timed(run, args.device)[0])
        m = [statistics.median(t) for t in times]
        print(f"| {columns} | {m[0]:.3f} s | " + " | ".join(f"{x:.3f} s ({x / m[0]:.2f}x)" for x in m[1:]) + " |",
              flush=True)


def grouped(args) -> None:
    """Seconds per trial: 8 trials of one shape in one stack, against the same 8 one after another."""
    reps = 3 if args.quick else args.reps
    flops_per_s = matmul_throughput(args.device)
    folds = dataset_folds("digits", args.device)
    epochs, P = 20, 8
    print(f"\nMany trials in one stack (digits, 5 folds, {epochs} epochs, batch 64; {P} trials with their own "
          f"lr, weight decay and dropout; medians of {reps} pairs):")
    print("| config | P=1, per trial | P=8, per trial | trials/s P=8 / P=1 | floor per trial | P=1 / floor "
          "| P=8 / floor |")
    print("|---|---|---|---|---|---|---|")
    rng = np.random.default_rng(0)
    for depth, width in CONFIGS[:2]:
        configs = [NetConfig(depth, width, float(rng.uniform(0, 0.3)), float(10 ** rng.uniform(-6, -2)),
                             float(10 ** rng.uniform(-3.5, -2)), batch_size=64) for _ in range(P)]
        alone = lambda: [train_folds(folds, c, max_epochs=epochs, patience=None, seed=i)  # noqa: E731
                         for i, c in enumerate(configs)]
        together = lambda: train_trials(folds, configs, list(range(P)), [None] * P,  # noqa: E731
                                        max_epochs=epochs, patience=None)
        alone(), together()
        # In pairs, alone then together: this machine's speed drifts by tens of percent within
        # minutes, so the ratio is the median of each pair's, not a ratio of two medians.
        pairs = [(timed(alone, args.device)[0] / P, timed(together, args.device)[0] / P) for _ in range(reps)]
        t1, t8 = statistics.median(a for a, _ in pairs), statistics.median(b for _, b in pairs)
        ratio = statistics.median(a / b for a, b in pairs)
        floor = trial_flops(folds, configs[0], epochs) / flops_per_s
        print(f"| d{depth} w{width} | {t1:.3f} s | {t8:.3f} s | {ratio:.2f}x | {floor:.3f} s | {t1 / floor:.1f} "
              f"| {t8 / floor:.1f} |", flush=True)


if __name__ == "__main__":
    main()

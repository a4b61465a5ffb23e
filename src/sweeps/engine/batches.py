"""An epoch's training rows: which rows each stack position sees, in what order, in what batches.

Each fold shuffles its own training rows every epoch, from its own generator (seeded from
its trial and fold id: a fold sees the same order inside the stack as alone). With
re-sampling (classification, `resampling="over"|"under"`), the epoch is instead a
class-balanced draw from the fold's real training rows. The epoch's rows are gathered once
per epoch, so that every batch is a view; from one shared copy of the rows
(`data.shared`) they are gathered and preprocessed a window at a time instead. Input noise
(`noise=`) is added per batch, from each trial's own generator.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from sweeps.data.folds import Folds
from sweeps.data.shared import WINDOW_ROWS
from sweeps.engine.config import NetConfig
from sweeps.engine.positions import Positions, rows_of_folds
from sweeps.engine.seeds import seeds_for


class EpochRows:
    """The rows of every epoch of a stack in training (`stack.Stack`; `add` as trials join)."""

    def __init__(self, folds: Folds, configs: list[NetConfig], seeds: list[int], positions: Positions) -> None:
        self.folds, self.configs, self.positions = folds, configs, positions
        device = folds.X_train.device
        self.device = device
        self.batch_size = configs[0].batch_size
        self.batch_rngs: list[torch.Generator] = []  # per position
        self.noise_rngs: list[torch.Generator] = []  # per trial
        self.add(seeds)
        resampling = configs[0].resampling
        self.resampling = resampling if folds.classification and resampling != "none" else None
        self.rows = folds.X_train.shape[1]  # an epoch's rows per position
        if self.resampling is not None:
            self.class_rows = [class_rows(folds, f) for f in range(folds.k)]
            self.per_class = epoch_class_size(self.resampling, folds.split_class_counts)
            self.rows = self.per_class * folds.n_outputs
        self.n_steps = math.ceil(self.rows / self.batch_size)

    def add(self, seeds: list[int]) -> None:
        """The random streams of trials that join the stack (seeded as they would be alone)."""
        self.batch_rngs += [torch.Generator().manual_seed(r) for s in seeds
                            for r in seeds_for(s, self.folds.fold_ids, "batches")]
        self.noise_rngs += [torch.Generator(device=self.device).manual_seed(seeds_for(s, [0], "noise")[0])
                            for s in seeds]

    def release(self, trial: int, positions: list[int]) -> None:
        """A finished trial's random streams, dropped."""
        for p in positions:
            self.batch_rngs[p] = None
        self.noise_rngs[trial] = None

    def epoch(self) -> Epoch:
        """The next epoch's rows for the live positions (draws from their generators)."""
        live, fold_of = self.positions.live, self.positions.fold_of
        n_train = self.folds.X_train.shape[1]
        if self.resampling is None:  # drawn in place: stacking each position's draw held the epoch's order twice
            order = torch.empty(len(live), n_train, dtype=torch.int64)
            for i, p in enumerate(live):
                torch.randperm(n_train, generator=self.batch_rngs[p], out=order[i])
        else:
            order = torch.stack([resampled_epoch(self.class_rows[fold_of[p]], self.per_class, self.batch_rngs[p])
                                 for p in live])
        return Epoch(self, order.to(self.folds.X_train.device))


class Epoch:
    """One epoch's row order per live position, and its batches."""

    def __init__(self, rows: EpochRows, order: torch.Tensor) -> None:
        self.rows, self.order = rows, order
        folds = rows.folds
        self.folds_now = rows.positions.folds_now()
        self.runs = rows.positions.runs()
        self.noise = any(rows.configs[t].noise for t, _ in self.runs)
        # One shared copy of the rows: read and preprocess the epoch a window of rows at a time,
        # not all at once (that would be the copy the layout avoids).
        self.window_steps = max(1, WINDOW_ROWS // rows.batch_size)
        self.windowed = folds.shared and self.window_steps < rows.n_steps
        # The targets too: gathered for the whole epoch they are another [positions, rows] int64
        # array (96 MB for 5 folds of 2.4 million training rows).
        self.X = None if self.windowed else rows_of_folds(folds.X_train, self.folds_now, order)
        self.y = None if self.windowed else rows_of_folds(folds.y_train, self.folds_now, order)
        self.window_start = 0

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The `step`th batch of every live position: features [positions, B, d] and targets [positions, B]."""
        size = self.rows.batch_size
        rows = slice(step * size, (step + 1) * size)
        if self.windowed:
            if step % self.window_steps == 0:
                self.window_start = step * size
                window = self.order[:, self.window_start:self.window_start + self.window_steps * size]
                self.X = self.rows.folds.X_train[self.folds_now.unsqueeze(1), window]
                self.y = self.rows.folds.y_train[self.folds_now.unsqueeze(1), window]
            rows = slice(rows.start - self.window_start, rows.stop - self.window_start)
        x = self.X[:, rows]
        if self.noise:  # augmentation: a fresh perturbation of every row, every step, per trial
            x = _with_noise(x, self.runs, self.rows.configs, self.rows.noise_rngs)
        return x, self.y[:, rows]


def _with_noise(x: torch.Tensor, runs: list[tuple[int, int]], configs: list[NetConfig],
                generators: list[torch.Generator]) -> torch.Tensor:
    """x plus each trial's Gaussian noise, drawn from its own generator as it would be alone."""
    if len(runs) == 1:
        t = runs[0][0]
        return x + configs[t].noise * torch.randn(x.shape, generator=generators[t], device=x.device)
    noisy, start = x.clone(), 0
    for t, count in runs:
        if configs[t].noise:
            part = noisy[start:start + count]
            part += configs[t].noise * torch.randn(part.shape, generator=generators[t], device=x.device)
        start += count
    return noisy


def class_rows(folds: Folds, fold: int) -> list[torch.Tensor]:
    """Per class, the positions of `fold`'s real training rows of that class (CPU, int64)."""
    y = folds.y_train[fold].cpu()
    real = folds.train_weight[fold].cpu().bool()
    return [torch.nonzero((y == c) & real).flatten() for c in range(folds.n_outputs)]


def epoch_class_size(resampling: str, class_counts: np.ndarray) -> int:
    """Rows per class in a re-sampled epoch, the same for every fold (the stack is rectangular).

    "over": as many as the largest class (random over-sampling: the smaller classes repeat
    rows); "under": as many as the smallest class present (random under-sampling, a fresh
    subset of the larger classes every epoch, so over the epochs every row is used).
    `class_counts` is `Folds.split_class_counts`, [folds of the split, classes]: folds differ
    by a row or so per class, and the smallest such count is taken.
    """
    pick = max if resampling == "over" else min
    return max(1, min(int(pick(c[c > 0])) for c in class_counts if (c > 0).any()))


def resampled_epoch(rows_by_class: list[torch.Tensor], per_class: int, generator: torch.Generator) -> torch.Tensor:
    """One epoch's row order: `per_class` rows of every class present, shuffled together.

    A class with at least `per_class` rows gives a random subset of them without
    repetition; a smaller one gives all its rows, then random repeats of them. Absent
    classes (possible in a tiny fold) give nothing; the epoch is then topped up by repeats
    of the drawn rows, so every fold's epoch has the same length.
    """
    drawn = []
    for rows in rows_by_class:
        n = len(rows)
        if n == 0:
            continue
        if n >= per_class:
            drawn.append(rows[torch.randperm(n, generator=generator)[:per_class]])
        else:
            extra = torch.randint(n, (per_class - n,), generator=generator)
            drawn.append(torch.cat([rows, rows[extra]]))
    epoch = torch.cat(drawn)
    missing = per_class * len(rows_by_class) - len(epoch)
    if missing:
        epoch = torch.cat([epoch, epoch[torch.randint(len(epoch), (missing,), generator=generator)]])
    return epoch[torch.randperm(len(epoch), generator=generator)]

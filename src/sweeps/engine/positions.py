"""Who is where in a stack: position p holds trial `owner[p]`'s fold `fold_of[p]`.

The stack is trial-major: trial 0's k folds, then trial 1's, and so on. Positions leave the
stack when their fold stops or their trial ends (`drop`), and everything held per position
(weights, optimizer state, row orders) is sliced alike with the index `drop` returns. Trials
that join a stack in training (`add`) take the next positions, after the live ones.
"""

from __future__ import annotations

from typing import Any

import torch


class Positions:
    def __init__(self, trials: int, k: int, device: torch.device) -> None:
        self.k, self.device = k, device
        self.owner: list[int] = []
        self.fold_of: list[int] = []
        self.live: list[int] = []  # positions still in the stack, in stack order
        self.add(trials)

    def add(self, trials: int) -> list[int]:
        """`trials` more trials join the stack, after the live positions; returns their positions."""
        first = len(self.owner) // self.k
        new = list(range(len(self.owner), len(self.owner) + trials * self.k))
        self.owner += [t for t in range(first, first + trials) for _ in range(self.k)]
        self.fold_of += [f for _ in range(trials) for f in range(self.k)]
        self.live += new
        return new

    def index(self, positions: list[int]) -> torch.Tensor:
        return torch.tensor(positions, device=self.device)

    def runs(self, positions: list[int] | None = None) -> list[tuple[int, int]]:
        """(trial, how many of its positions) in stack order: each trial's stretch of the stack."""
        runs: list[tuple[int, int]] = []
        for p in self.live if positions is None else positions:
            t = self.owner[p]
            if runs and runs[-1][0] == t:
                runs[-1] = (t, runs[-1][1] + 1)
            else:
                runs.append((t, 1))
        return runs

    def per_position(self, by_trial: list[Any]) -> Any:
        """One value per trial, as the live positions need it: the value itself when every
        trial has the same one (the cheap case), else a float tensor with one per position."""
        if len(set(by_trial)) == 1:
            return by_trial[0]
        return torch.tensor([by_trial[self.owner[p]] for p in self.live], dtype=torch.float32, device=self.device)

    def folds_now(self) -> torch.Tensor:
        """The fold of each live position, as an index into the folds' tensors."""
        return self.index([self.fold_of[p] for p in self.live])

    def of_trial(self, t: int) -> range:
        """Every position trial `t` has (live or not)."""
        return range(t * self.k, (t + 1) * self.k)

    def drop(self, leaving: list[int]) -> torch.Tensor:
        """Remove `leaving` from the stack; returns the index of the kept rows of everything
        held per live position."""
        keep = [i for i, p in enumerate(self.live) if p not in leaving]
        self.live = [self.live[i] for i in keep]
        return self.index(keep)


# Per-position copies of fold tensors, once per epoch. `index_select` on dimension 0 copies
# whole blocks; advanced indexing (`x[folds]`, `x[folds[:, None], order]`) goes element by
# element: 7x slower for 40 positions' validation rows of digits, 4x for their epoch's
# training rows, a tenth of an 8-trial d1 w32 stack's time (docs/benchmarks.md).
def of_folds(x, folds: torch.Tensor):
    """`x[folds]`: each position's fold's block of `x` (a tensor, or `data.shared.FoldRows`)."""
    return x.index_select(0, folds) if torch.is_tensor(x) else x[folds]


def rows_of_folds(x, folds: torch.Tensor, order: torch.Tensor):
    """`x[folds[:, None], order]`: rows `order[i]` of fold `folds[i]`, `[positions, n, ...]`
    (a tensor `[k, rows, ...]`, or `data.shared.FoldRows`, which gathers and preprocesses)."""
    if not (torch.is_tensor(x) and x.is_contiguous()):
        return x[folds.unsqueeze(1), order]
    flat = (folds.unsqueeze(1) * x.shape[1] + order).view(-1)
    return x.view(-1, *x.shape[2:]).index_select(0, flat).view(*order.shape, *x.shape[2:])

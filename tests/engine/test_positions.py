from __future__ import annotations

import torch

from sweeps.engine.positions import of_folds, rows_of_folds


def test_per_position_copies_are_the_advanced_indexing_they_replace():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 11, 4, generator=g)  # [folds, rows, features]
    y = torch.randint(0, 5, (3, 11), generator=g)
    folds = torch.tensor([2, 0, 1, 2, 0])  # stack positions' folds, in any order, repeated
    order = torch.stack([torch.randperm(11, generator=g)[:7] for _ in folds])
    for x in (X, y, X.transpose(1, 2).contiguous().transpose(1, 2)):  # the last not contiguous: the fallback
        assert torch.equal(rows_of_folds(x, folds, order), x[folds.unsqueeze(1), order])
        assert torch.equal(of_folds(x, folds), x[folds])

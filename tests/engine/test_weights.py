"""Row and class weights: "balanced" class weights are counted on each fold's real rows only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sweeps import Space, Study
from sweeps.data.dataset import load_dataset
from sweeps.data.folds import make_folds
from sweeps.engine.weights import class_weights


@pytest.mark.parametrize("layout", ["copies", "shared"])
def test_balanced_class_weights_count_each_fold_s_real_rows_and_not_its_top_up_repeats(layout):
    rng = np.random.default_rng(0)
    rows = 1003  # folds of unequal size: the shorter training parts are topped up with repeats
    X = rng.normal(size=(rows, 3)).astype(np.float32)
    y = rng.choice(3, size=rows, p=[0.6, 0.3, 0.1])
    dataset = load_dataset(Study(name="w", task="classification", data=lambda: (X, y), space=Space(), folds=5))
    folds = make_folds(dataset, 5, 0, layout=layout)
    assert (folds.train_weight == 0).any()  # there are repeats to leave out

    weights = class_weights(folds)

    for f in range(folds.k):
        real = dataset.y[folds.train_rows[f]]
        counts = np.bincount(real, minlength=3)
        expected = len(real) / (3 * counts)
        np.testing.assert_allclose(weights[f].numpy(), expected, rtol=1e-6)
    assert weights.dtype == torch.float32
    # a fold trained alone, or folds in another order, get their own fold's weights
    torch.testing.assert_close(class_weights(folds.select([3, 1])), weights[[3, 1]])

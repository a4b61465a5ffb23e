"""Learned category embeddings (`Space(category_dim=d)`) on real mixed-type rows."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

import sweeps
from sweeps import Space, Table
from sweeps.data.dataset import load_dataset
from sweeps.data.folds import make_folds
from sweeps.engine.config import NetConfig
from sweeps.engine.trained import TrainedModel, UnseenCategoryWarning
from sweeps.engine.train import train_folds

from conftest import ADULT, DATA, digits_study


@pytest.fixture(scope="module")
def adult(tmp_path_factory):
    """3,000 real adult rows: 8 categorical columns, rare categories that some folds do not keep."""
    frame = pd.read_csv(DATA / "adult-train.csv.gz", header=None, names=ADULT, skipinitialspace=True, nrows=3000)
    path = tmp_path_factory.mktemp("adult") / "adult.csv"
    frame.to_csv(path, index=False)
    dataset = load_dataset(digits_study(name="adult-categories", data=Table(path, target="income"),
                                        space=Space(depth=1)))
    return dataset, make_folds(dataset, 3, seed=0)


def test_each_categorical_column_gets_its_block_of_one_hot_columns(adult):
    dataset, folds = adult
    blocks = folds.category_blocks
    assert len(blocks) == 3 and all(len(fold) == 8 for fold in blocks)  # 8 text columns in adult
    one_hot = folds.n_features - folds.n_numeric
    for fold in blocks:
        starts = [start for start, _ in fold]
        assert starts == sorted(starts) and fold[-1][0] + fold[-1][1] <= one_hot
        assert all(start + count == nxt for (start, count), (nxt, _) in zip(fold, fold[1:]))


def test_category_embeddings_learn_and_a_fold_trains_the_same_in_the_stack_and_alone(adult):
    _, folds = adult
    config = NetConfig(1, 64, 0.0, 1e-4, 3e-3, batch_size=128, category_dim=8)
    result = train_folds(folds, config, max_epochs=6, patience=None, seed=3)
    assert result.model.categories is not None and result.model.categories.out == 8 * 8
    assert np.mean(result.metrics) > 0.80  # ~0.84 here; predicting the majority class gives 0.76
    alone = train_folds(folds.select([2]), config, max_epochs=6, patience=None, seed=3)
    for w_stack, w_alone in zip(result.model.params, alone.model.params):
        torch.testing.assert_close(w_stack[2], w_alone[0], rtol=1e-4, atol=1e-5)
    assert math.isclose(result.val_losses[2], alone.val_losses[0], rel_tol=1e-4)
    # the vectors of categories a fold's encoder did not keep stay zero: the mask holds
    weight, mask = result.model.categories.weight, result.model.categories.mask
    assert not (weight * (1 - mask)).any() and (weight * mask).abs().sum() > 0


def test_a_model_with_category_embeddings_saves_and_reloads_exactly(adult, tmp_path):
    dataset, folds = adult
    result = train_folds(folds, NetConfig(2, 32, 0.0, 1e-4, 3e-3, category_dim=4), max_epochs=2, patience=None,
                         seed=0)
    model = TrainedModel("classification", {"category_dim": 4}, folds.preprocessings, result.model, [0, 1, 2],
                         list(dataset.classes), {}, list(dataset.columns), list(dataset.kinds))
    again = sweeps.load_model(model.save(tmp_path / "m.pt"))
    X = dataset.X.iloc[dataset.test]
    with warnings.catch_warnings():  # a few test rows hold categories rarer than a fold's encoder keeps
        warnings.simplefilter("ignore", UnseenCategoryWarning)
        np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))
    assert again.net.architecture()["category_dim"] == 4


def test_without_text_columns_category_dim_changes_nothing(digits_folds):
    plain = train_folds(digits_folds, NetConfig(1, 16, 0.0, 1e-4, 3e-3), max_epochs=2, patience=None, seed=0)
    asked = train_folds(digits_folds, NetConfig(1, 16, 0.0, 1e-4, 3e-3, category_dim=8), max_epochs=2,
                        patience=None, seed=0)
    assert asked.model.categories is None and asked.val_losses == plain.val_losses

"""Data validation and the held-out split: bad data is named, the test set never leaks."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_digits

from sweeps import SweepsError
from sweeps.data.dataset import load_dataset
from sweeps.data.folds import make_folds, split_folds

from conftest import digits_study


def test_held_out_rows_never_enter_a_fold(digits_dataset):
    test = set(digits_dataset.test.tolist())
    assert len(test) == 360  # ceil(0.2 * 1797)
    for train, val in split_folds(digits_dataset, folds=5, seed=0):
        assert not test & set(train.tolist()) and not test & set(val.tolist())
        assert not set(train.tolist()) & set(val.tolist())
    folds = make_folds(digits_dataset, folds=5, seed=0)
    for train, val in zip(folds.train_rows, folds.val_rows):
        assert not test & set(train.tolist()) and not test & set(val.tolist())


def test_held_out_split_is_stratified_and_seeded(digits_dataset):
    y = digits_dataset.y
    overall = np.bincount(y) / len(y)
    in_test = np.bincount(y[digits_dataset.test]) / len(digits_dataset.test)
    assert np.abs(overall - in_test).max() < 0.01
    again = load_dataset(digits_study())
    assert np.array_equal(again.test, digits_dataset.test)
    assert again.fingerprint == digits_dataset.fingerprint
    other_seed = load_dataset(digits_study(seed=1))
    assert other_seed.data_hash == digits_dataset.data_hash
    assert other_seed.test_hash != digits_dataset.test_hash


def test_scaler_is_fitted_on_each_training_part_only(digits_dataset):
    folds = make_folds(digits_dataset, folds=3, seed=0)
    for f in range(3):
        real = folds.train_weight[f].bool()
        X_train = folds.X_train[f][real]
        assert X_train.mean(0).abs().max() < 1e-4  # standardized on its own rows...
        assert folds.X_val[f].mean(0).abs().max() > 1e-3  # ...validation rows are not


def digits_with(X=None, y=None):
    X0, y0 = load_digits(return_X_y=True)
    return lambda: (X0 if X is None else X(X0), y0 if y is None else y(y0))


@pytest.mark.parametrize("data, message", [
    (digits_with(X=lambda X: np.where(np.arange(X.size).reshape(X.shape) == 5, np.nan, X)),
     r"X has 1 NaN or infinite value\(s\), first at row 0, column 5; impute them"),
    (digits_with(X=lambda X: X.astype(object).__setitem__((3, 2), "seven") or X.astype(object)),
     r"non-numeric"),
    (digits_with(y=lambda y: np.zeros_like(y)), r"single class \(0\)"),
    (digits_with(y=lambda y: y[:-5]), r"X has 1797 rows but y has 1792"),
    (lambda: load_digits(return_X_y=True)[0], r"the loader must return \(X, y\)"),
    (digits_with(X=lambda X: X[:, 0]), r"X must be 2-D"),
])
def test_bad_data_is_named(data, message):
    with pytest.raises(SweepsError, match=message):
        load_dataset(digits_study(data=data))


def test_non_numeric_feature_is_named():
    X, y = load_digits(return_X_y=True)
    X = X.astype(object)
    X[3, 2] = "seven"
    with pytest.raises(SweepsError, match=r"non-numeric values \('seven' at row 3, column 2\)"):
        load_dataset(digits_study(data=(X, y)))


def test_more_folds_than_rows_of_smallest_class():
    X, y = load_digits(return_X_y=True)
    keep = (y != 9) | (np.cumsum(y == 9) <= 5)  # class 9 keeps 5 rows: 4 after the test split
    with pytest.raises(SweepsError, match=r"class 9 has 4 rows outside the test set, fewer than folds=5"):
        load_dataset(digits_study(data=(X[keep], y[keep]), folds=5))


def test_regression_target_must_be_numeric():
    X, _ = load_digits(return_X_y=True)
    with pytest.raises(SweepsError, match=r"y has non-numeric values"):
        load_dataset(digits_study(task="regression", data=(X, np.array(["a"] * len(X)))))

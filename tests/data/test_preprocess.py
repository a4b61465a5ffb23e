"""Per-fold preprocessing against scikit-learn's own transformers, and its plain saved state."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, QuantileTransformer, StandardScaler

from sweeps.data.preprocess import MAX_CATEGORIES, Preprocessing, smooth_clip


@pytest.fixture(scope="module")
def mixed():
    rng = np.random.default_rng(0)
    n = 600
    frame = pd.DataFrame({
        "income": rng.lognormal(10, 1, n),  # skewed, with outliers
        "age": rng.integers(18, 90, n).astype(float),
        "flag": rng.random(n) < 0.1,
        "city": rng.choice([f"c{i:03d}" for i in range(80)], n, p=np.r_[[0.3], np.full(79, 0.7 / 79)]),
        "colour": rng.choice(["red", "green", "blue"], n),
    })
    frame.loc[rng.random(n) < 0.1, "income"] = np.nan
    frame.loc[rng.random(n) < 0.05, "colour"] = None
    return frame


def sklearn_pipeline(numeric_step):
    return ColumnTransformer([
        ("numeric", make_pipeline(SimpleImputer(strategy="median"), numeric_step), ["income", "age", "flag"]),
        ("categorical", make_pipeline(SimpleImputer(strategy="most_frequent"),
                                      OneHotEncoder(handle_unknown="infrequent_if_exist",
                                                    max_categories=MAX_CATEGORIES, sparse_output=False)),
         ["city", "colour"]),
    ], sparse_threshold=0.0)


@pytest.mark.parametrize("scaling, step", [
    ("standard", StandardScaler()),
    ("quantile", QuantileTransformer(output_distribution="normal", n_quantiles=400, subsample=None)),
    # 400 = min(1000, training rows): what scikit-learn and ours use on 400 rows, said without its warning
])
def test_matches_scikit_learn_on_a_mixed_table(mixed, scaling, step):
    train, other = mixed.iloc[:400], mixed.iloc[400:].copy()
    other.loc[other.index[:3], "city"] = "never-seen"  # unseen categories share the infrequent column
    ours = Preprocessing.fit(train, scaling=scaling)
    theirs = sklearn_pipeline(step).fit(train)
    np.testing.assert_allclose(ours.features(other), theirs.transform(other), atol=2e-5)
    assert ours.n_numeric == 3 and ours.n_features == theirs.transform(other).shape[1]


def test_robust_scaling_is_median_iqr_then_smooth_clipping(mixed):
    train = mixed.iloc[:400]
    prep = Preprocessing.fit(train, scaling="robust")
    age = train["age"].to_numpy()
    q25, median, q75 = np.percentile(age, [25, 50, 75])
    x = (age - median) / (q75 - q25)
    np.testing.assert_allclose(prep.features(train)[:, 1], x / np.sqrt(1 + (x / 3) ** 2), rtol=1e-5, atol=1e-6)
    # the formula itself: identity near 0, tends to +-3, odd
    assert smooth_clip(np.array([1e-4]))[0] == pytest.approx(1e-4)
    assert smooth_clip(np.array([1e6]))[0] == pytest.approx(3.0, rel=1e-6)
    assert smooth_clip(np.array([-5.0]))[0] == -smooth_clip(np.array([5.0]))[0]
    # a 10 % binary column has a zero IQR: scaled by half its range instead, not divided by 0
    flag = prep.features(train)[:, 2]
    assert np.isfinite(flag).all() and len(np.unique(flag)) == 2


def test_arrays_and_the_regression_target():
    rng = np.random.default_rng(1)
    X = rng.normal(3, 2, (200, 4))
    X[:, 3] = 7.0  # constant column: stays at 0
    y = rng.normal(50, 10, 200)
    prep = Preprocessing.fit(X, y)
    np.testing.assert_allclose(prep.features(X), StandardScaler().fit_transform(X), atol=1e-5)
    assert prep.target(y).mean() == pytest.approx(0, abs=1e-6) and prep.target(y).std() == pytest.approx(1, abs=1e-5)


def test_state_is_plain_json_and_arrays_and_round_trips(mixed):
    for scaling in ("standard", "robust", "quantile"):
        prep = Preprocessing.fit(mixed.iloc[:400], scaling=scaling)
        meta, arrays = prep.state()
        meta = json.loads(json.dumps(meta))  # nothing but JSON
        assert all(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in arrays.values())
        again = Preprocessing.from_state(meta, arrays)
        np.testing.assert_array_equal(again.features(mixed), prep.features(mixed))


def test_auto_ranks_continuous_columns_and_standardises_those_of_few_levels(mixed):
    train = mixed.iloc[:400]
    auto = Preprocessing.fit(train, scaling="auto")
    quantile = Preprocessing.fit(train, scaling="quantile")
    standard = Preprocessing.fit(train, scaling="standard")
    assert auto.ranked.tolist() == [True, True, False]  # income and age (72 levels) vs a flag
    out = auto.features(mixed)
    np.testing.assert_allclose(out[:, :2], quantile.features(mixed)[:, :2], atol=1e-6)
    np.testing.assert_allclose(out[:, 2:], standard.features(mixed)[:, 2:], atol=1e-6)
    again = Preprocessing.from_state(*auto.state())
    np.testing.assert_array_equal(again.features(mixed), out)

"""Per-fold preprocessing: fitted on one set of training rows, applied to any rows.

One component for the sweep, `evaluate` and saved models alike. What it learns is plain
numbers and strings (medians, scales, quantiles, category lists), so a saved model holds
it as arrays and JSON, never as pickled objects: opening a model file cannot run code.

Numeric columns: missing values take the training median, then one of these scalings:
- "standard": (x - mean) / std, as scikit-learn's `StandardScaler`;
- "robust": (x - median) / IQR, then smooth clipping x / sqrt(1 + (x / 3)^2), as in RealMLP
  (Holzmüller et al. 2024): outliers are squashed towards ±3 instead of dominating a layer;
- "quantile": each value's rank among the training values, mapped to a standard normal,
  as scikit-learn's `QuantileTransformer(output_distribution="normal")`;
- "auto": "quantile" for columns with many distinct values (continuous measurements),
  "standard" for columns of a few levels (`AUTO_QUANTILE_MIN_DISTINCT`).
Categorical columns: missing values take the most frequent category, then one-hot
encoding with at most `MAX_CATEGORIES` columns; rarer and unseen categories share the last
("infrequent") column, as scikit-learn's `OneHotEncoder(handle_unknown="infrequent_if_exist")`.

Numeric columns come first in the output; `n_numeric` says how many (numerical embeddings
apply to those). `tests/data/test_preprocess.py` checks each part against scikit-learn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sweeps.spec.options import SCALINGS

# "auto": the quantile transform for columns with more distinct training values than this,
# standard scaling for the others. A rank transform suits continuous, skewed measurements
# (incomes, counts, areas); on a column of a few levels (pixel intensities 0-16, ratings, a
# handful of years) it mostly bends the spacing of the levels: digits' nets lost a third in
# validation loss with it (0.12 -> 0.17), where adult's and California's were as good or better.
AUTO_QUANTILE_MIN_DISTINCT = 32
MAX_CATEGORIES = 50  # one-hot columns per categorical column, the last one shared by rare categories
N_QUANTILES = 1000  # as scikit-learn's QuantileTransformer
_CLIP_EPS = 1e-7  # as scikit-learn: the normal quantile of 1e-7 is about -5.2
# Fitting reads one column at a time and `features` transforms a block of rows at a time, each
# in float64: the float64 temporaries stay a few MiB whatever the table's size, instead of
# several float64 copies of the whole table (a 3-million-row table peaked at 10x its matrix).
BLOCK_VALUES = 2**19  # numeric values per block of rows in `features` (4 MiB in float64)


def smooth_clip(x: np.ndarray, bound: float = 3.0) -> np.ndarray:
    """x / sqrt(1 + (x / bound)^2): the identity near 0, tending to ±bound (RealMLP)."""
    return x / np.sqrt(1.0 + np.square(x / bound))


def _normal_ppf(p: np.ndarray) -> np.ndarray:
    from scipy.special import ndtri

    return ndtri(p)


def _numeric_columns(X) -> list:
    import pandas as pd

    return [c for c in X.columns if pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c])]


@dataclass
class Preprocessing:
    """Feature and (regression) target transformation fitted on one set of training rows."""

    scaling: str
    center: np.ndarray  # [n_numeric] subtracted after imputation
    scale: np.ndarray  # [n_numeric] divided by
    fill: np.ndarray  # [n_numeric] value for a missing entry (the training median)
    quantiles: np.ndarray | None = None  # [N_QUANTILES, n_numeric] for "quantile" and "auto"
    numeric_columns: list[str] | None = None  # tables: names of the numeric columns, in order
    categorical_columns: list[str] = field(default_factory=list)
    categories: list[list[str]] = field(default_factory=list)  # per categorical column, kept ones
    infrequent: list[bool] = field(default_factory=list)  # per categorical column: a shared last column
    most_frequent: list[str] = field(default_factory=list)  # per categorical column: fills missing
    y_mean: float = 0.0
    y_std: float = 1.0
    ranked: np.ndarray | None = None  # [n_numeric] bool, "auto": the columns the quantile transform takes

    # --- fitting ---------------------------------------------------------------------------
    @classmethod
    def fit(cls, X, y: np.ndarray | None = None, scaling: str = "standard",
            rows: np.ndarray | None = None) -> Preprocessing:
        """Fit on training rows `X` (array or DataFrame; only its rows at positions `rows`, if
        given, without copying them out first) and, for regression, their targets `y`."""
        if scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {scaling!r}")
        table = hasattr(X, "columns")
        numeric_columns = _numeric_columns(X) if table else None
        n_numeric = len(numeric_columns) if table else np.shape(X)[1]

        def column(j: int) -> np.ndarray:  # one column's training values, as float64
            if table:
                values = _as_float(X[numeric_columns[j]])
                return values if rows is None else values[rows]
            return _as_float(np.asarray(X)[:, j] if rows is None else np.asarray(X)[rows, j])

        fitted = [_fit_column(column(j), scaling) for j in range(n_numeric)]  # float64 temporaries of one column
        center, scale, fill = (np.array([f[i] for f in fitted], dtype=np.float64) for i in range(3))
        quantiles = None  # as before the columns were fitted one by one: "auto" without numeric columns has none
        if scaling == "quantile" or (scaling == "auto" and fitted):
            n_quantiles = max(1, min(N_QUANTILES, len(X) if rows is None else len(rows)))
            quantiles = np.stack([f[3] for f in fitted], axis=1) if fitted else np.zeros((n_quantiles, 0))
        prep = cls(scaling, center, scale, fill, quantiles, [str(c) for c in numeric_columns] if table else None)
        if scaling == "auto":
            prep.ranked = np.array([f[4] for f in fitted], dtype=bool)
        if table:
            for column in (c for c in X.columns if c not in numeric_columns):
                kept, infrequent, most_frequent = _fit_categories(X[column] if rows is None else X[column].iloc[rows])
                prep.categorical_columns.append(str(column))
                prep.categories.append(kept)
                prep.infrequent.append(infrequent)
                prep.most_frequent.append(most_frequent)
        if y is not None:
            # The net learns the standardized target, so one lr range suits any target scale.
            y = np.asarray(y, dtype=np.float64)
            prep.y_mean, prep.y_std = float(y.mean()), float(y.std()) or 1.0
        return prep

    # --- applying --------------------------------------------------------------------------
    @property
    def n_numeric(self) -> int:
        return len(self.center)

    @property
    def n_features(self) -> int:
        """Width of the output: numeric columns, then one-hot columns."""
        return self.n_numeric + sum(len(c) + i for c, i in zip(self.categories, self.infrequent))

    @property
    def columns(self) -> list[str] | None:
        """The input columns a table must have (None for arrays)."""
        if self.numeric_columns is None:
            return None
        return [*self.numeric_columns, *self.categorical_columns]

    def features(self, X, rows: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
        """float32 [rows, n_features] for raw rows `X` (its rows at positions `rows`, if given),
        written into `out` if given (its first n_features columns; the rest are left as they are).
        Transformed a block of rows at a time, so the float64 work stays small."""
        n = len(X) if rows is None else len(rows)
        if out is None:
            out = np.empty((n, self.n_features), np.float32)
        step = max(1024, BLOCK_VALUES // max(1, self.n_numeric))
        for start in range(0, n, step):
            block = slice(start, min(n, start + step)) if rows is None else rows[start:start + step]
            part = X.iloc[block] if hasattr(X, "iloc") else np.asarray(X)[block]
            out[start:start + step, :self.n_features] = self._features(part)
        return out

    def _features(self, X) -> np.ndarray:
        table = self.numeric_columns is not None
        values = _as_float(X[self.numeric_columns] if table else X)
        values = np.where(np.isnan(values), self.fill, values)
        if self.scaling == "quantile":
            numeric = _quantile_normal(values, self.quantiles)
        elif self.scaling == "auto":
            numeric = (values - self.center) / self.scale
            if self.ranked.any():
                numeric[:, self.ranked] = _quantile_normal(values[:, self.ranked], self.quantiles[:, self.ranked])
        else:
            numeric = (values - self.center) / self.scale
            if self.scaling == "robust":
                numeric = smooth_clip(numeric)
        blocks = [numeric.astype(np.float32)]
        for column, kept, infrequent, most_frequent in zip(self.categorical_columns, self.categories,
                                                           self.infrequent, self.most_frequent):
            blocks.append(_one_hot(X[column], kept, infrequent, most_frequent))
        return np.concatenate(blocks, axis=1) if len(blocks) > 1 else blocks[0]

    def target(self, y: np.ndarray) -> np.ndarray:
        return ((np.asarray(y, dtype=np.float64) - self.y_mean) / self.y_std).astype(np.float32)

    # --- saving: plain arrays and JSON ------------------------------------------------------
    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(description, arrays): everything needed to rebuild it, nothing executable."""
        meta = {"scaling": self.scaling, "numeric_columns": self.numeric_columns,
                "categorical_columns": self.categorical_columns, "categories": self.categories,
                "infrequent": self.infrequent, "most_frequent": self.most_frequent,
                "y_mean": self.y_mean, "y_std": self.y_std}
        arrays = {"center": self.center, "scale": self.scale, "fill": self.fill}
        if self.quantiles is not None:
            arrays["quantiles"] = self.quantiles
        if self.ranked is not None:
            arrays["ranked"] = self.ranked.astype(np.float64)
        return meta, arrays

    @classmethod
    def from_state(cls, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> Preprocessing:
        prep = cls(str(meta["scaling"]), np.asarray(arrays["center"], np.float64),
                   np.asarray(arrays["scale"], np.float64), np.asarray(arrays["fill"], np.float64),
                   None if "quantiles" not in arrays else np.asarray(arrays["quantiles"], np.float64),
                   None if meta["numeric_columns"] is None else [str(c) for c in meta["numeric_columns"]],
                   [str(c) for c in meta["categorical_columns"]],
                   [[str(v) for v in c] for c in meta["categories"]],
                   [bool(i) for i in meta["infrequent"]], [str(v) for v in meta["most_frequent"]],
                   float(meta["y_mean"]), float(meta["y_std"]))
        if "ranked" in arrays:
            prep.ranked = np.asarray(arrays["ranked"]) > 0.5
        return prep


def _as_float(X) -> np.ndarray:
    if hasattr(X, "to_numpy"):
        return X.to_numpy(dtype=np.float64, na_value=np.nan)
    return np.asarray(X, dtype=np.float64)


def _fit_column(values: np.ndarray, scaling: str) -> tuple[float, float, float, np.ndarray | None, bool]:
    """One numeric column's (center, scale, fill, quantiles, ranked by "auto") from its training values."""
    fill = float(np.nan_to_num(np.nanmedian(values), nan=0.0)) if len(values) else 0.0
    values = np.where(np.isnan(values), fill, values)
    quantiles = _fit_quantiles(values) if scaling in ("quantile", "auto") else None
    ranked = scaling == "auto" and len(np.unique(values)) > AUTO_QUANTILE_MIN_DISTINCT
    if scaling in ("standard", "auto"):
        mean, std = (float(values.mean()), float(values.std())) if len(values) else (0.0, 1.0)
        return mean, std if std > 0 else 1.0, fill, quantiles, ranked  # a constant column stays at 0
    if scaling == "robust":
        q25, median, q75 = np.percentile(values, [25, 50, 75])
        spread = q75 - q25
        # A column with a zero IQR (mostly one value) is scaled by half its range instead,
        # and a constant column is left at 0, as in RealMLP.
        half_range = (values.max() - values.min()) / 2
        return float(median), float(spread if spread > 0 else half_range if half_range > 0 else 1.0), fill, None, False
    return 0.0, 1.0, fill, quantiles, False


def _fit_quantiles(values: np.ndarray) -> np.ndarray:
    n_quantiles = max(1, min(N_QUANTILES, len(values)))
    return np.percentile(values, np.linspace(0, 1, n_quantiles) * 100) if len(values) else np.zeros(n_quantiles)


def _quantile_normal(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """scikit-learn's QuantileTransformer(output_distribution="normal").transform, per column."""
    if values.shape[1] == 0:
        return values
    return normal_scores(quantile_probabilities(values, quantiles))


def quantile_probabilities(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Each value's probability under its column's quantiles (before the normal's inverse)."""
    references = np.linspace(0, 1, len(quantiles))
    out = np.empty_like(values)
    for j in range(values.shape[1]):
        q, x = quantiles[:, j], values[:, j]
        # Ties (a discrete column) map to the middle of their run of quantiles: the mean of
        # interpolating upwards and downwards, as scikit-learn does.
        out[:, j] = 0.5 * (np.interp(x, q, references) - np.interp(-x, -q[::-1], -references[::-1]))
        out[x - _CLIP_EPS < q[0], j] = 0.0
        out[x + _CLIP_EPS > q[-1], j] = 1.0
    return out


NORMAL_BOUND = _CLIP_EPS - np.spacing(1)  # probabilities are kept this far from 0 and 1


def normal_scores(p: np.ndarray) -> np.ndarray:
    return np.clip(_normal_ppf(p), _normal_ppf(NORMAL_BOUND), _normal_ppf(1 - NORMAL_BOUND))


def category_strings(column):
    """The column as pandas strings, missing entries kept as missing (vectorised: big tables)."""
    return column.astype("string")


def _fit_categories(column) -> tuple[list[str], bool, str]:
    values = category_strings(column)
    counted = values.value_counts(dropna=True)
    if counted.empty:
        return [], False, ""
    names = np.array(sorted(counted.index.astype(str)), dtype=object)
    counts = counted.reindex(names).to_numpy(dtype=np.int64)
    most_frequent = str(names[np.argmax(counts)])  # ties: the first in sorted order, as SimpleImputer
    # Missing entries are imputed before the frequencies are counted, as in the pipeline
    # SimpleImputer(most_frequent) -> OneHotEncoder.
    counts = counts + np.where(names == most_frequent, int(values.isna().sum()), 0)
    if len(names) <= MAX_CATEGORIES:
        return [str(n) for n in names], False, most_frequent
    # As scikit-learn: a stable ascending sort by count marks the rarest as infrequent,
    # ties going to the category that sorts first.
    rarest = set(np.argsort(counts, kind="mergesort")[: len(names) - MAX_CATEGORIES + 1].tolist())
    return [str(n) for i, n in enumerate(names) if i not in rarest], True, most_frequent


def _one_hot(column, kept: list[str], infrequent: bool, most_frequent: str) -> np.ndarray:
    values = category_strings(column).fillna(most_frequent)
    width = len(kept) + infrequent
    out = np.zeros((len(values), width), dtype=np.float32)
    if width == 0:
        return out
    import pandas as pd

    codes = pd.Index(kept).get_indexer(values)  # -1: not a kept category
    if infrequent:
        codes[codes < 0] = len(kept)  # rare and unseen categories share the last column
    rows = np.nonzero(codes >= 0)[0]
    out[rows, codes[rows]] = 1.0
    return out

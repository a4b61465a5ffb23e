"""Load a study's data, validate it once, and carve the held-out test set.

The held-out split is made here, once, from the study's seed, before any trial; the sweep
only ever sees `Dataset.dev` rows. Its fingerprint lets later runs prove they see the same
data and the same test rows.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from sweeps.data.allocator import release_freed_memory
from sweeps.data.preprocess import BLOCK_VALUES
from sweeps.errors import SweepsError
from sweeps.spec.study import Study
from sweeps.spec.table import FLOAT32_MATRIX, check_columns, encode_for_hashing, is_table


@dataclass(frozen=True)
class Dataset:
    """A study's validated data and its held-out split.

    `X` is float32 [n, d], or a pandas DataFrame for a table with non-numeric columns or
    missing values (preprocessed per fold by `sweeps.preprocess`); `y` holds class
    indices (int64) for classification and float32 targets for regression. `dev` and
    `test` are row indices into them.
    """

    X: np.ndarray  # or a pandas DataFrame
    y: np.ndarray
    classes: np.ndarray | None  # original class labels; y indexes into it
    dev: np.ndarray
    test: np.ndarray
    data_hash: str
    test_hash: str
    groups: np.ndarray | None = None  # per row, its source's index into group_names (-1: not known)
    group_names: tuple[str, ...] = ()
    target: object = None  # Study(target_data=): unlabeled rows of the deployment distribution (features only)
    # The features' names in order (None: an array without names) and how each is treated:
    # "numeric" or "categorical" (`column_kinds`). With the values, they are the data's identity:
    # the same numbers under swapped names are other data.
    columns: tuple[str, ...] | None = None
    kinds: tuple[str, ...] = ()

    @property
    def is_table(self) -> bool:
        return is_table(self.X)

    def rows(self, index: np.ndarray):
        """The feature rows at `index` (array rows, or DataFrame rows by position)."""
        return self.X.iloc[index] if self.is_table else self.X[index]

    @property
    def columns_hash(self) -> str:
        """SHA-256 of the features' names, order and kinds (for an array: its width)."""
        schema = {"columns": list(self.columns), "kinds": list(self.kinds)} if self.columns is not None \
            else {"array": int(self.X.shape[1])}
        return hashlib.sha256(json.dumps(schema, ensure_ascii=False).encode()).hexdigest()

    @property
    def fingerprint(self) -> dict:
        """What the study stores to recognise its data and its test rows later.

        `data_sha256` covers the values and targets, `columns_sha256` the names, order and
        kinds of the columns: a study is the same data only when both match.
        """
        return {
            "data_sha256": self.data_hash,
            "test_rows_sha256": self.test_hash,
            "columns_sha256": self.columns_hash,
            "columns": None if self.columns is None else list(self.columns),
            "n_rows": int(len(self.y)),
            "n_features": int(self.X.shape[1]),
            "n_test": int(len(self.test)),
        }

    def in_column_order(self, columns: list[str]) -> Dataset:
        """The same data with its columns in the order `columns` (the same names, reordered),
        and its fingerprints computed again (`record.check_same_study`)."""
        position = {name: i for i, name in enumerate(self.columns)}
        order = [position[c] for c in columns]
        X = self.X[list(columns)] if self.is_table else self.X[:, order]
        target = self.target
        if target is not None:
            target = target[list(columns)] if is_table(target) else target[:, order]
        data_hash = _data_hash(X, self.y)
        test_hash = _sha256(np.sort(self.test).astype(np.int64), data_hash.encode())
        return dataclasses.replace(self, X=X, data_hash=data_hash, test_hash=test_hash, target=target,
                                   columns=tuple(columns), kinds=tuple(self.kinds[i] for i in order))


def load_dataset(spec: Study) -> Dataset:
    """Call the study's data loader, validate what it returns, and split off the test set."""
    X, y = _unpack(spec.data() if callable(spec.data) else spec.data)
    raw_groups = _group_column(spec.groups, X, "data", len(y) if hasattr(y, "__len__") else None)
    columns, kinds = column_schema(X)
    X = _features(X)
    if len(X) != len(y):
        raise SweepsError(
            f"data: X has {len(X)} rows but y has {len(y)}; they must describe the same rows."
        )
    n_dev = len(X)
    if spec.test_data is not None:  # a separate test set: appended, then held out whole
        X_test, y_test = _unpack(spec.test_data() if callable(spec.test_data) else spec.test_data)
        test_groups = _group_column(spec.groups, X_test, "test_data", None) if isinstance(spec.groups, str) else None
        _same_columns(columns, kinds, X_test, "test_data")
        X_test = _features(X_test, "test_data")
        if len(X_test) != len(y_test):
            raise SweepsError(f"test_data: X has {len(X_test)} rows but y has {len(y_test)}.")
        if X_test.shape[1] != X.shape[1]:
            raise SweepsError(f"test_data: has {X_test.shape[1]} features, data has {X.shape[1]}; "
                              "they must have the same columns.")
        if is_table(X) != is_table(X_test):
            if columns is None:
                raise SweepsError("test_data: give it in the same form as data (both tables or both arrays).")
            # One side is complete and numeric (read as an array), the other is not: both as tables.
            X, X_test = (x if is_table(x) else _named_table(x, columns) for x in (X, X_test))
        if is_table(X):
            import pandas as pd

            X = pd.concat([X, X_test], ignore_index=True)
        else:
            X = np.concatenate([X, X_test])
        y = np.concatenate([np.asarray(y), np.asarray(y_test)])
    if spec.task == "classification":
        y, classes = _class_labels(y)
    else:
        y, classes = _regression_target(y), None

    if spec.test_data is not None:
        dev, test = np.arange(n_dev), np.arange(n_dev, len(y))
        missing = [] if classes is None else sorted(set(np.unique(y[test]).tolist()) - set(np.unique(y[dev]).tolist()))
        if missing:
            raise SweepsError(f"test_data: has classes the training data lacks "
                              f"({[_label(classes[m]) for m in missing]}); a model cannot predict them.")
    else:
        dev, test = _held_out_split(len(y), y if classes is not None else None, spec)
    _check_fold_sizes(y, dev, classes, spec.folds)
    data_hash = _data_hash(X, y)
    test_hash = _sha256(np.sort(test).astype(np.int64), data_hash.encode())
    target = _target_rows(spec, X, test, columns, kinds) if spec.target_data is not None else None
    groups, names = None, ()
    if raw_groups is not None:
        if spec.test_data is not None:  # the separate test rows: their column, or not known
            raw_groups = np.concatenate([raw_groups, test_groups if test_groups is not None
                                         else np.full(len(y) - n_dev, None, dtype=object)])
        groups, names = _group_codes(raw_groups)
        _check_groups(groups[dev], names, spec.folds)
    release_freed_memory()  # the conversions' temporaries, freed but kept by the C allocator
    return Dataset(X, y, classes, dev, test, data_hash, test_hash, groups, names, target, columns, kinds)


def column_schema(X: object) -> tuple[tuple[str, ...] | None, tuple[str, ...]]:
    """The names of a table's columns and how each is treated ("numeric" or "categorical");
    (None, ()) for an array, whose columns have no names."""
    if not is_table(X):
        return None, ()
    import pandas as pd

    kinds = tuple("numeric" if pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c])
                  else "categorical" for c in X.columns)
    return tuple(str(c) for c in X.columns), kinds


def _same_columns(columns: tuple[str, ...] | None, kinds: tuple[str, ...], other: object, where: str) -> None:
    """`other` must have data's column names, in the same order, treated the same way."""
    names, other_kinds = column_schema(other)
    if columns is None or names is None:
        return  # an array on either side: only the widths can be compared (_features, below)
    if names != columns:
        raise SweepsError(f"{where}: columns {list(names)} differ from data's {list(columns)}; give the same "
                          "columns in the same order.")
    differ = [c for c, a, b in zip(columns, kinds, other_kinds) if a != b]
    if differ:
        raise SweepsError(f"{where}: column {differ[0]!r} is {dict(zip(names, other_kinds))[differ[0]]} there "
                          f"but {dict(zip(columns, kinds))[differ[0]]} in data; give it the same type in both.")


def _data_hash(X: object, y: np.ndarray) -> str:
    """SHA-256 of the feature values and the targets (the columns' names: `Dataset.columns_hash`)."""
    return _sha256(encode_for_hashing(X) if is_table(X) else X, y)


def _row_hashes(X: object, kinds: tuple[str, ...]) -> np.ndarray:
    """One hash per row, of its values as the study reads them: numeric columns as float64
    (an integer column and the same numbers with a missing value hash alike), categorical
    ones as strings. So two rows hash alike exactly when they are the same row to the study."""
    import pandas as pd

    if not is_table(X):
        frame = pd.DataFrame(np.asarray(X, dtype=np.float64))
    else:
        frame = pd.DataFrame({i: (X.iloc[:, i].to_numpy(dtype=np.float64, na_value=np.nan) if kind == "numeric"
                                  else X.iloc[:, i].astype("string"))
                              for i, kind in enumerate(kinds or ("numeric",) * X.shape[1])})
    return pd.util.hash_pandas_object(frame, index=False).to_numpy()


def _target_rows(spec: Study, X: object, test: np.ndarray, columns: tuple[str, ...] | None,
                 kinds: tuple[str, ...]) -> object:
    """Study(target_data=): its feature rows, checked like the data's and disjoint from the
    held-out test rows (the test set must stay unseen, even unlabeled)."""
    raw = spec.target_data() if callable(spec.target_data) else spec.target_data
    if isinstance(raw, (tuple, list)) and len(raw) == 2:
        raw = raw[0]  # (X, y) from a loader such as Table: the labels are not used
    _same_columns(columns, kinds, raw, "target_data")
    T = _features(raw, "target_data")
    if is_table(T) != is_table(X):
        T = _as_table_like(T, X)  # complete numeric target rows, where data needs a table (or the reverse)
    if T.shape[1] != X.shape[1]:
        raise SweepsError(f"target_data: its columns differ from data's ({T.shape[1]} against {X.shape[1]}); "
                          "target rows need the same features.")
    rows = X.iloc[test] if is_table(X) else X[test]
    shared = np.isin(_row_hashes(T, kinds), _row_hashes(rows, kinds)).sum()
    if shared:
        raise SweepsError(f"target_data: {shared} of its {len(T)} rows equal held-out test rows (all features "
                          "identical); the test set must stay unseen by training, labeled or not: give target "
                          "rows disjoint from the test rows (where the data repeats rows, drop from target_data "
                          "those equal to a test row).")
    return T


def _named_table(X: np.ndarray, columns: tuple[str, ...]):
    """A table read as an array (complete and numeric: the fast path) as a table again."""
    import pandas as pd

    return pd.DataFrame(X, columns=list(columns))


def _as_table_like(T: object, X: object) -> object:
    """Target rows in the form of the data's features: a complete numeric table is read as an
    array (the fast path), so one side may be a table and the other an array of the same columns."""
    if is_table(X):
        return _named_table(T, tuple(X.columns)).astype({c: X[c].dtype for c in X.columns})
    raise SweepsError("target_data: has missing or non-numeric values where data has none; give target rows "
                      "like the data's (impute them, or drop those rows).")


MAX_GROUPS = 50  # per-group records are a few numbers per group per trial


def _group_column(groups: object, X: object, where: str, n_rows: int | None) -> np.ndarray | None:
    """Study.groups as one object per row of `X`: a column of the table, or the given array."""
    if groups is None:
        return None
    if isinstance(groups, str):
        if not is_table(X) or groups not in X.columns:
            columns = list(X.columns) if is_table(X) else None
            raise SweepsError(f"Study.groups: '{groups}' is not a column of the {where} table"
                              + (f" (columns: {columns})" if columns else " (it returned an array, not a table)")
                              + "; name one of its columns, or give one group per row as an array.")
        return X[groups].to_numpy(dtype=object)
    values = np.asarray(groups, dtype=object)
    if values.ndim != 1 or (n_rows is not None and len(values) != n_rows):
        raise SweepsError(f"Study.groups: has {len(values) if values.ndim == 1 else values.shape} entries, data has "
                          f"{n_rows} rows; give one group per row of data (not of test_data).")
    return values


def _group_codes(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    """Group names (missing values: "missing") and each row's index into them; None: not known."""
    known = np.array([v is not None for v in values])
    unique, codes = np.unique(["missing" if _is_missing(v) else str(v) for v in values[known]], return_inverse=True)
    if len(unique) > MAX_GROUPS:
        raise SweepsError(f"Study.groups: {len(unique)} distinct groups; at most {MAX_GROUPS} are monitored "
                          "(group rare sources together, or name a coarser column).")
    out = np.full(len(values), -1, dtype=np.int64)
    out[known] = codes
    return out, tuple(str(u) for u in unique)


def _check_groups(dev_groups: np.ndarray, names: tuple[str, ...], folds: int) -> None:
    """Per-group monitoring needs groups among the rows the sweep sees: at least two of them, and
    a known group on at least one row per fold. Checked before anything is written."""
    known = dev_groups[dev_groups >= 0]
    fix = "give each row its source (a column name of the table, or one entry per row), or remove groups="
    if len(known) == 0:
        raise SweepsError(f"Study.groups: no row outside the held-out test set has a group (every entry is None); "
                          f"{fix}.")
    present = sorted({names[g] for g in np.unique(known)})
    if len(present) < 2:
        raise SweepsError(f"Study.groups: every row outside the held-out test set with a group is in "
                          f"{present[0]!r}; monitoring per group needs at least two groups; {fix}.")
    if len(known) < folds:
        raise SweepsError(f"Study.groups: only {len(known)} row(s) outside the held-out test set have a group, "
                          f"fewer than folds={folds}; every fold needs rows of some group; {fix}.")


def _is_missing(value: object) -> bool:
    return isinstance(value, float) and value != value  # NaN


def _unpack(raw: object) -> tuple[object, object]:
    if hasattr(raw, "data") and hasattr(raw, "target"):  # a scikit-learn Bunch
        return raw.data, raw.target
    if isinstance(raw, (tuple, list)) and len(raw) == 2:
        return raw[0], raw[1]
    raise SweepsError(
        f"data: the loader must return (X, y), got {type(raw).__name__}; "
        "e.g. data=lambda: load_digits(return_X_y=True)."
    )


def _features(X: object, where: str = "data") -> np.ndarray:
    if is_table(X):
        table = _table(X, where)
        if table is not None:
            return table
        return _numeric_table(X, where)  # all numeric and complete: a float32 matrix
    try:
        array = np.asarray(X)
    except Exception as e:  # ragged lists and the like
        raise SweepsError(f"{where}: X cannot be read as a table ({e}).") from None
    if array.ndim == 1:
        raise SweepsError(f"{where}: X must be 2-D (rows x features), got shape {array.shape}; "
                          "for one feature use X.reshape(-1, 1).")
    if array.ndim != 2:
        raise SweepsError(f"{where}: X must be 2-D (rows x features), got shape {array.shape}.")
    if array.shape[1] == 0:
        raise SweepsError(f"{where}: X has no feature columns.")
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        bad = _first_non_numeric(array)
        raise SweepsError(
            f"{where}: X has non-numeric values ({bad}); encode categorical columns as numbers "
            "(e.g. one-hot) or drop them."
        )
    if array.shape[0] == 0:
        raise SweepsError(f"{where}: X has no rows; the loader must return at least one row per fold.")
    # Checked and converted a block of rows at a time: a float64 copy of the whole matrix (and
    # its masks) would cost several times the float32 result on a big table.
    out = np.empty(array.shape, np.float32)
    step = max(1024, BLOCK_VALUES // array.shape[1])
    for start in range(0, len(array), step):
        wide = array[start:start + step].astype(np.float64)
        if not np.isfinite(wide).all():
            rows, cols = np.nonzero(~np.isfinite(array.astype(np.float64)))
            raise SweepsError(
                f"{where}: X has {len(rows)} NaN or infinite value(s), first at row {rows[0]}, column "
                f"{cols[0]}; impute them (e.g. sklearn.impute.SimpleImputer) or drop those rows."
            )
        if (np.abs(wide) > np.finfo(np.float32).max).any():
            _check_float32_range(array.astype(np.float64), where)  # the message counts the whole matrix
        out[start:start + step] = wide
    return out


def _numeric_table(X, where: str) -> np.ndarray:
    """An all-numeric table as a float32 matrix, filled column by column (the table and the
    matrix are the only full-size copies); a column that fails a check gets the matrix's message."""
    if X.attrs.get(FLOAT32_MATRIX):  # `Table` read it into a float32 matrix of its own, checked
        values = X.to_numpy()
        if values.dtype == np.float32 and values.flags.c_contiguous:
            values.flags.writeable = True  # pandas hands out a read-only view; the matrix is ours
            return values
    out = np.empty(X.shape, np.float32)
    for j in range(X.shape[1]):
        column = X.iloc[:, j].to_numpy(dtype=np.float64)
        if not (np.isfinite(column).all() and (np.abs(column) <= np.finfo(np.float32).max).all()):
            # The message names the first bad cell of the whole matrix (float64: a bool column
            # beside numbers would make an object array, read as non-numeric).
            return _features(X.to_numpy(dtype=np.float64), where)
        out[:, j] = column
    return out


def _check_float32_range(values: np.ndarray, where: str) -> None:
    """Finite values beyond float32 (|x| > 3.4e38) would become infinite in training."""
    too_large = np.abs(values) > np.finfo(np.float32).max
    if too_large.any():
        rows, cols = np.nonzero(too_large)
        raise SweepsError(f"{where}: X has {len(rows)} value(s) too large for float32 (|x| > 3.4e38), first "
                          f"{values[rows[0], cols[0]]:.3g} at row {rows[0]}, column {cols[0]}; rescale that "
                          "column (e.g. take its logarithm).")


def _table(X, where: str):
    """A DataFrame that needs per-fold imputation or encoding, checked; None if plain numeric."""
    import pandas as pd

    if X.shape[1] == 0:
        raise SweepsError(f"{where}: X has no feature columns.")
    if X.shape[0] == 0:
        raise SweepsError(f"{where}: X has no rows; the loader must return at least one row per fold.")
    if X.attrs.get(FLOAT32_MATRIX):  # numeric and complete: `Table` checked it as it read it
        return None
    numeric = all(pd.api.types.is_numeric_dtype(X[c]) or pd.api.types.is_bool_dtype(X[c]) for c in X.columns)
    if numeric and not X.isna().any().any():
        return None
    check_columns(X, where)
    for c in X.columns:
        if pd.api.types.is_numeric_dtype(X[c]):
            values = X[c].to_numpy(dtype=float, na_value=0.0)
            if np.isinf(values).any():
                raise SweepsError(f"{where}: column {c!r} has infinite values; replace them or mark them missing.")
            if (np.abs(values) > np.finfo(np.float32).max).any():
                raise SweepsError(f"{where}: column {c!r} has values too large for float32 (|x| > 3.4e38); "
                                  "rescale it (e.g. take its logarithm).")
    return X.reset_index(drop=True)


def _first_non_numeric(array: np.ndarray) -> str:
    for index, value in np.ndenumerate(array):
        try:
            float(value)
        except (TypeError, ValueError):
            return f"{_label(value)!r} at row {index[0]}, column {index[1]}"
    return f"dtype {array.dtype}"


def _class_labels(y: object) -> tuple[np.ndarray, np.ndarray]:
    labels = np.asarray(y)
    if labels.ndim != 1:
        raise SweepsError(f"data: y must be 1-D (one label per row), got shape {labels.shape}.")
    if labels.dtype.kind == "f" and not np.isfinite(labels).all():
        raise SweepsError("data: y has NaN or infinite labels; drop those rows.")
    if labels.dtype == object and any(v is None for v in labels):
        raise SweepsError("data: y has missing labels (None); drop those rows.")
    try:
        classes, encoded = np.unique(labels, return_inverse=True)
    except TypeError:
        raise SweepsError("data: y mixes label types that cannot be compared; use one type.") from None
    if len(classes) < 2:
        raise SweepsError(
            f"data: y has a single class ({_label(classes[0])!r}) for a classification study; a classifier "
            "needs at least two classes."
        )
    return encoded.astype(np.int64), classes


def _regression_target(y: object) -> np.ndarray:
    target = np.asarray(y)
    if target.ndim == 2 and target.shape[1] == 1:
        target = target[:, 0]
    if target.ndim != 1:
        raise SweepsError(f"data: y must be 1-D (one target per row), got shape {target.shape}.")
    try:
        target = target.astype(np.float64)
    except (TypeError, ValueError):
        raise SweepsError("data: y has non-numeric values for a regression study; use task="
                          "'classification' for labels.") from None
    if not np.isfinite(target).all():
        raise SweepsError(f"data: y has {int((~np.isfinite(target)).sum())} NaN or infinite "
                          "value(s); drop those rows.")
    if (np.abs(target) > np.finfo(np.float32).max).any():
        raise SweepsError("data: y has values too large for float32 (|y| > 3.4e38); rescale the target.")
    target = target.astype(np.float32)
    if float(target.std()) == 0.0:
        raise SweepsError("data: y is constant; there is nothing to learn.")
    return target


def _held_out_split(n: int, labels: np.ndarray | None, spec: Study) -> tuple[np.ndarray, np.ndarray]:
    """The one held-out split: seeded, stratified for classification, sorted indices."""
    n_test = int(np.ceil(spec.test_size * n))
    if labels is not None and n_test < len(np.unique(labels)):
        raise SweepsError(
            f"data: test_size={spec.test_size} gives {n_test} test rows for {len(np.unique(labels))} "
            "classes; a stratified test set needs one row per class; raise test_size."
        )
    if n - n_test < spec.folds:
        raise SweepsError(f"data: {n} rows leave {n - n_test} for {spec.folds} folds; "
                          "use more data, fewer folds or a smaller test_size.")
    try:
        dev, test = train_test_split(np.arange(n), test_size=spec.test_size,
                                     random_state=spec.seed, stratify=labels)
    except ValueError as e:  # e.g. a class with a single row cannot be stratified
        raise SweepsError(f"data: cannot make a stratified held-out split: {e}; "
                          "drop classes with a single row.") from None
    return np.sort(dev), np.sort(test)


def _check_fold_sizes(y: np.ndarray, dev: np.ndarray, classes: np.ndarray | None, folds: int) -> None:
    if classes is None:
        return
    counts = np.bincount(y[dev], minlength=len(classes))
    smallest = int(counts.argmin())
    if counts[smallest] < folds:
        raise SweepsError(
            f"data: class {_label(classes[smallest])!r} has {counts[smallest]} rows outside the test set, "
            f"fewer than folds={folds}; stratified k-fold needs at least one per fold; use "
            f"folds<={max(int(counts[smallest]), 2)} or more data."
        )


def _label(value: object) -> object:
    """A numpy scalar as the plain Python value, so messages read `9`, not `np.int64(9)`."""
    return value.item() if hasattr(value, "item") else value


def _sha256(*parts: np.ndarray | bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        if isinstance(part, np.ndarray):
            digest.update(str((part.dtype, part.shape)).encode())
            part = np.ascontiguousarray(part).data  # the bytes in place: no copy of a big matrix
        digest.update(part)
    return digest.hexdigest()

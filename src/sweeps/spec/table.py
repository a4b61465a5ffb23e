"""Your own data: a CSV or Parquet file with mixed column types and missing values.

    from sweeps import Study, Table
    study = Study(name="adult", task="classification",
                  data=Table("data/adult-train.csv.gz", target="income", columns=[...]), ...)

A `Table` is a data loader like any other: calling it returns `(X, y)` with X a pandas
DataFrame. Its columns are checked once (all-missing, id-like and half-numeric columns are
errors that name the column and the fix). Preprocessing (`sweeps.preprocess`: numeric columns
imputed and scaled, categorical ones imputed and one-hot encoded) is fitted on each fold's
training part only, and on all non-test rows for `evaluate`: it never sees a validation or
test row while it is fitted.
"""

from __future__ import annotations

import contextvars
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from sweeps.errors import SweepsError

# The folder of the study file being loaded: relative Table paths are resolved against it.
STUDY_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("STUDY_DIR", default=None)

@dataclass(frozen=True)
class Table:
    """A CSV (optionally gzip-compressed) or Parquet file with a target column.

    Args:
        path: the file; a relative path is looked up next to the study file first.
        target: the name of the column to predict.
        columns: column names, for a file without a header row.
        drop: columns to leave out (ids, leaks).
        na_values: strings that mean "missing", besides empty cells.
        categorical: numeric columns to treat as categories (one-hot, or category embeddings):
            codes such as store or region numbers, which are labels, not quantities.
    """

    path: str | Path
    target: str
    columns: Sequence[str] | None = None
    drop: Sequence[str] = ()
    na_values: Sequence[str] = ("?", "NA", "N/A", "nan", "")
    categorical: Sequence[str] = ()
    base_dir: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.base_dir is None:
            object.__setattr__(self, "base_dir", STUDY_DIR.get())

    @property
    def resolved(self) -> Path:
        path = Path(self.path)
        if not path.is_absolute() and self.base_dir is not None and (self.base_dir / path).exists():
            return self.base_dir / path
        return path

    def read(self):
        import pandas as pd

        path = self.resolved
        if not path.is_file():
            looked = [path.absolute()] if path.is_absolute() or self.base_dir is None else \
                [(self.base_dir / path).absolute(), path.absolute()]
            raise SweepsError(f"Table: no such file {self.path!s} (looked for {' and '.join(map(str, looked))}); give "
                              "the path of a CSV or Parquet file (relative paths are looked up next to the study "
                              "file, then in the current folder).")
        try:
            if path.suffix == ".parquet":
                import pyarrow.parquet as pq

                # Each column its own block, and Arrow's buffers freed as they are converted:
                # the read (without pre-buffering whole column chunks) peaks near 1.8 copies of
                # the table instead of 2.7.
                frame = pq.read_table(path, pre_buffer=False).to_pandas(split_blocks=True, self_destruct=True)
            else:
                frame = pd.read_csv(path, header=None if self.columns else "infer", names=self.columns,
                                    na_values=list(self.na_values), skipinitialspace=True,
                                    keep_default_na=True)
        except ImportError as e:
            raise SweepsError(f"Table {path}: {e}; for Parquet files install pyarrow "
                              "(pip install 'sweeps[parquet]').") from None
        except Exception as e:
            if type(e).__name__ == "EmptyDataError":
                raise SweepsError(f"Table {path}: the file is empty; give a table with a header row and data "
                                  "rows.") from None
            raise SweepsError(f"Table {path}: cannot be read ({type(e).__name__}: {e}).") from None
        if len(frame) == 0:
            raise SweepsError(f"Table {path}: has column names but no rows of data; give a table with at least "
                              "one row per fold.")
        return frame

    def __call__(self):
        path = self.resolved
        if path.suffix == ".parquet" and path.is_file():
            numeric = self._numeric_parquet(path)
            if numeric is not None:
                return numeric
        frame = self.read()
        if self.target not in frame.columns:
            raise SweepsError(f"Table {path}: no target column {self.target!r}; columns are "
                              f"{', '.join(map(str, frame.columns))}.")
        for option in ("drop", "categorical"):
            unknown = [c for c in getattr(self, option) if c not in frame.columns]
            if unknown:
                raise SweepsError(f"Table {path}: {option} names unknown column(s) {unknown}.")
        if self.target in self.categorical:
            raise SweepsError(f"Table {path}: categorical names the target {self.target!r}; the study's task says "
                              "how the target is read.")
        y = frame[self.target]
        missing = int(y.isna().sum())
        if missing:
            raise SweepsError(f"Table {path}: the target {self.target!r} is missing in {missing} row(s); "
                              "drop those rows first.")
        X = frame.drop(columns=[self.target, *self.drop])
        for name in self.categorical:
            if name in X.columns:
                X[name] = as_categories(X[name])
        check_columns(X, str(path))
        return X, y


    def _numeric_parquet(self, path: Path):
        """(X, y) of a Parquet file whose feature columns are all numeric and complete, read a
        column at a time straight into one float32 matrix; None for any other file (then
        `read`'s DataFrame path takes it, with its checks and messages).

        Through pandas, a big table was held three times at once: Arrow's columns, the
        DataFrame's, and the float32 matrix that training reads. Here the matrix is the only
        full-size array: X is a DataFrame over it (`FLOAT32_MATRIX` in its attrs, so that
        `load_dataset` takes the matrix as it is), and y is read alone."""
        import pandas as pd

        try:
            import pyarrow as pa
            import pyarrow.parquet as pq

            file = pq.ParquetFile(path)
            schema = file.schema_arrow
        except Exception:  # not readable as Parquet: `read` says why, in its words
            return None
        names = [n for n in schema.names if n != self.target and n not in self.drop]
        if (self.target not in schema.names or not names or self.categorical
                or any(n not in schema.names for n in self.drop)):
            return None
        # Floating columns only: an integer or boolean column keeps its type through the
        # DataFrame path, where `groups=` may name it (its values are the groups' names).
        if not all(pa.types.is_floating(schema.field(n).type) for n in names):
            return None
        n_rows = file.metadata.num_rows
        if n_rows == 0:
            return None
        matrix = np.empty((n_rows, len(names)), np.float32)
        try:
            for j, name in enumerate(names):
                column = file.read(columns=[name]).column(0)
                if column.null_count:
                    return None
                # float64 first, as the DataFrame path converts: the same float32 values.
                wide = column.to_numpy().astype(np.float64)
                if not (np.isfinite(wide).all() and (np.abs(wide) <= np.finfo(np.float32).max).all()):
                    return None  # missing, infinite or too large: the DataFrame path names the cell
                matrix[:, j] = wide
                del column, wide
            y = file.read(columns=[self.target]).column(0).to_pandas()
        except Exception:  # a damaged file: `read` says so in one line
            return None
        if y.isna().any():
            return None  # the DataFrame path names the rows
        X = pd.DataFrame(matrix, columns=names, copy=False)
        X.attrs[FLOAT32_MATRIX] = True
        return X, y.rename(self.target)


# Set in the attrs of a DataFrame that `Table` built over a float32 matrix of its own: checked,
# complete, and not shared with anyone, so it is taken as the design matrix without a copy.
FLOAT32_MATRIX = "sweeps.float32_matrix"


def as_categories(column):
    """A column's values as category labels (text), missing values kept missing: 7 and 7.0
    (an integer column read as float because of a missing cell) are the same label '7'."""
    import pandas as pd

    present = column.dropna()
    if pd.api.types.is_float_dtype(column) and bool((present == present.round()).all()):
        column = column.astype("Int64")
    return column.astype(str).where(column.notna(), np.nan).astype(object)


def check_columns(X, where: str) -> None:
    """Refuse columns that cannot be used as they are, naming each and the fix."""
    import pandas as pd

    n = len(X)
    for name in X.columns:
        column = X[name]
        if column.isna().all():
            raise SweepsError(f"{where}: column {name!r} is missing in every row; drop it (drop=[{name!r}]).")
        if pd.api.types.is_numeric_dtype(column) or pd.api.types.is_bool_dtype(column):
            values = column.dropna()
            if (pd.api.types.is_integer_dtype(values) and n > 20 and values.nunique() == n
                    and values.max() - values.min() == n - 1):
                raise SweepsError(f"{where}: column {name!r} numbers the rows (a distinct integer per row): "
                                  f"an id, not a feature; drop it (drop=[{name!r}]).")
            continue
        values = column.dropna().astype(str)
        if n > 20 and values.nunique() == n:
            raise SweepsError(f"{where}: column {name!r} has a distinct value in every row (an id or free "
                              f"text); one-hot encoding it would only memorise rows; drop it (drop=[{name!r}]).")
        numeric = pd.to_numeric(values, errors="coerce")
        bad = numeric.isna()
        if 0.9 <= 1 - bad.mean() < 1:
            example = values[bad].iloc[0]
            raise SweepsError(f"{where}: column {name!r} is numeric except {int(bad.sum())} value(s) such as "
                              f"{example!r}; fix them or list them in na_values.")


def is_table(X) -> bool:
    return hasattr(X, "columns") and hasattr(X, "iloc")


def encode_for_hashing(X) -> np.ndarray:
    """A stable byte view of a table, for the data fingerprint."""
    import pandas as pd

    return pd.util.hash_pandas_object(X, index=False).to_numpy()

"""One copy of the rows: every fold reads the same matrix and preprocesses what it reads.

`make_folds` by default gives each fold its own preprocessed copy of its rows: k-1 copies
of every training row and one of every validation row, k times the table in all. That is
the fastest layout (a batch is a slice), and the right one while it fits. For a big table it
does not: 5 folds of 5 million rows x 140 features would take 14 GiB. Here instead:

- `SharedRows` holds the table's rows once: scaled numeric columns as float32 values (NaN
  where missing), ranked ones (the quantile transform) as positions on a grid, categorical
  columns as integer codes into each column's categories (over all rows; which of them a
  fold keeps is still fitted on its training part), plus each fold's fitted preprocessing
  as tensors (medians, centres, scales, probabilities on the grid, and a lookup from
  category code to the fold's one-hot column);
- `FoldRows` stands where `Folds.X_train` / `X_val` hold a tensor: row numbers per fold,
  and indexing it gathers those rows and applies that fold's preprocessing, giving what
  `Preprocessing.features` gives (`tests/data/test_shared.py`; to float32's resolution).

The training loop reads an epoch in windows of `WINDOW_ROWS` rows per fold, so the
transform's few dozen operations are paid once per window, not per step, and memory holds
one window, not one epoch. Fitting is unchanged: each fold's preprocessing is fitted on its
training part only (`Preprocessing.fit`, the same code as the copies).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch

from sweeps.data.preprocess import Preprocessing, category_strings, normal_scores, quantile_probabilities

WINDOW_ROWS = 16384  # rows per fold gathered and preprocessed at once by the training loop
# Rows per fold a transform works on at a time. Its rank path makes a dozen float64
# temporaries of rows x folds x ranked columns; at a window's 16,384 rows (33 MB each for 5
# folds of 50 columns) glibc kept the freed ones resident and one epoch of a 1,000,000 x 50
# table peaked at 2,401 MiB (median of 3); at 4,096, 1,635 MiB (median of 4), the epoch's time
# the same within this machine's noise (31.7 s against 33.0 s); at 1,024 the kernels' fixed
# costs show (39 s). docs/benchmarks.md, "Big tables".
TRANSFORM_ROWS = 4096
POSITION_ROWS = 2**18  # rows of a column whose grid positions are found at once when the folds are laid out


@dataclass
class SharedRows:
    """The rows, once, and every fold's preprocessing as tensors. Dimension 0 of a fitted tensor is the fold.

    Numeric columns that some fold scales (standard, robust, or "auto"'s few-level columns)
    are kept as float32 values. Columns that some fold ranks (the quantile transform) are
    kept as a position on the column's grid, the sorted union of every fold's quantiles: the
    interval a value falls in and how far into it (or exactly on a grid point). A fold's
    probability is linear inside each such interval (its quantiles are grid points), so its
    transform is table lookups and a linear step; the tables hold each fold's probabilities
    at the grid points, computed by `preprocess.quantile_probabilities` itself.

    For an all-numeric table (a float32 matrix) `numeric` is that matrix, and only the grid
    intervals are stored (an int16 per ranked cell): the fraction into the interval is found
    per window from the value (`whole_rows`). Stored, values and fractions took a float32 each
    per cell beside the matrix. (Finding the interval too, by a binary search per cell per
    window, doubled the transform's time: measured, not kept.)
    """

    numeric: torch.Tensor  # [rows, len(raw_columns)] float32 values, NaN where missing (whole_rows: the matrix)
    raw_columns: torch.Tensor  # [c_raw] int64: their numeric output columns
    fill: torch.Tensor  # [K, c_raw] training medians
    center: torch.Tensor  # [K, c_raw]
    scale: torch.Tensor  # [K, c_raw]
    clip: torch.Tensor  # [K] bool: "robust" scaling's smooth clipping
    grid_index: torch.Tensor  # [rows, r] int16: interval [g-1, g] of the column's grid; -1: missing
    grid_frac: torch.Tensor  # [rows, r] float32: how far into it; -1: exactly on grid point g-1
    p_at: torch.Tensor  # [K, M, r] float64: each fold's probability at each grid point
    p_right: torch.Tensor  # [K, M, r] its limit just right of the point (they differ at ties)
    p_left: torch.Tensor  # [K, M, r] its limit just left of the point
    p_missing: torch.Tensor  # [K, r] the probability of the fold's median (a missing value)
    rank_columns: torch.Tensor  # [r] int64: numeric output columns that some fold ranks
    ranked: torch.Tensor  # [K, r] bool: the fold ranks it (else it scales the raw value)
    codes: torch.Tensor  # [rows, n_categorical] int32: index into the column's categories, -1 missing
    lookup: torch.Tensor  # [K, n_categorical, categories + 1] output column of a code, -1: none; last: missing
    grid: torch.Tensor  # [M, r] float64: each ranked column's grid, its last point repeated ([0, 0]: fractions stored)
    grid_length: torch.Tensor  # [r] int64: the points of each column's grid before the repeats
    n_numeric: int
    width: int  # output features (the widest fold's; narrower folds have zero columns at the end)
    # True: `numeric` is the dataset's own float32 matrix (an all-numeric table, every column,
    # not a copy), and the ranked columns' fractions are found as rows are read, from `grid`,
    # the values and their stored `grid_index` (`grid_frac` then has no rows).
    whole_rows: bool = False

    def transform(self, folds: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """Features `[len(folds), n, width]` of `rows` `[len(folds), n]`, each row by its fold's preprocessing."""
        k, n = rows.shape
        out = torch.zeros(k, n, self.width, device=rows.device)
        fitted = self.select(folds)  # the asked folds' fitted tensors, gathered once for every piece
        # TRANSFORM_ROWS at a time: the ranks' float64 temporaries (a dozen, each k x rows x
        # ranked columns x 8 bytes) then stay a few MB however many rows are asked for (a
        # window, or a validation chunk of 65,536 rows of every fold), and so does the peak.
        for start in range(0, n, TRANSFORM_ROWS):
            fitted._transform(rows[:, start:start + TRANSFORM_ROWS], out[:, start:start + TRANSFORM_ROWS])
        return out

    def _transform(self, rows: torch.Tensor, out: torch.Tensor) -> None:
        """Fill `out` with the features of `rows`, row i of dimension 0 by fold i (a `select`ed SharedRows)."""
        k = rows.shape[0]
        if self.raw_columns.numel():
            # [k, n, c_raw]; the whole matrix holds every column, the stored values only these
            x = self._columns(rows, self.raw_columns) if self.whole_rows else self.numeric[rows]
            x = torch.where(torch.isnan(x), self.fill.unsqueeze(1), x)
            z = (x - self.center.unsqueeze(1)) / self.scale.unsqueeze(1)
            clip = self.clip.view(k, 1, 1)
            if bool(clip.any()):
                z = torch.where(clip, z / torch.sqrt(1.0 + torch.square(z / 3.0)), z)
            out[:, :, self.raw_columns] = z
        if self.rank_columns.numel():
            z = self._ranks(rows)
            if not bool(self.ranked.all()):  # "auto" where folds disagree: the others scaled the raw value
                z = torch.where(self.ranked.unsqueeze(1), z, out[:, :, self.rank_columns])
            out[:, :, self.rank_columns] = z
        if self.codes.shape[1]:
            codes = self.codes[rows].long()  # [k, n, m]
            slots = torch.where(codes < 0, self.lookup.shape[2] - 1, codes)
            columns = self.lookup.gather(2, slots.permute(0, 2, 1)).permute(0, 2, 1)  # [k, n, m]
            out.scatter_add_(2, columns.clamp(min=0), (columns >= 0).to(out.dtype))  # a miss adds 0 to column 0

    def _ranks(self, rows: torch.Tensor) -> torch.Tensor:
        """The quantile transform's normal scores `[k, n, r]` of the ranked columns (a `select`ed SharedRows)."""
        if self.whole_rows:
            g, t = self._positions(rows)  # [k, n, r]
        else:
            g, t = self.grid_index[rows].long(), self.grid_frac[rows].double()
        below, above = (g - 1).clamp(min=0), g.clamp(0, self.p_left.shape[1] - 1)  # above: unused on a point
        p = torch.lerp(self.p_right.gather(1, below), self.p_left.gather(1, above), t.clamp(min=0))
        on_point = t < 0
        if bool(on_point.any()):
            p = torch.where(on_point, self.p_at.gather(1, below), p)
        p = torch.where(g < 0, self.p_missing.unsqueeze(1), p)
        return torch.special.ndtri(p).clamp_(_LOWEST, -_LOWEST).to(torch.float32)

    def _positions(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`grid_index` (stored) and `grid_frac` (found from the values, as `grid_positions`
        finds it when it is stored: the same numbers) of `rows`, `[k, n, r]`."""
        g = self.grid_index[rows].long()
        k, n, r = g.shape
        x = self._columns(rows, self.rank_columns).double().view(k * n, r)
        frac = grid_fraction(self.grid, self.grid_length, g.view(k * n, r), x)
        return g, frac.view(k, n, r)

    def _columns(self, rows: torch.Tensor, columns: torch.Tensor) -> torch.Tensor:
        """`numeric[rows][..., columns]` of the whole matrix (`whole_rows`), `[k, n, len(columns)]`:
        whole rows copied out, then the columns, as plain copies rather than a 2-D gather."""
        x = self.numeric.index_select(0, rows.reshape(-1))
        if columns.numel() != self.numeric.shape[1]:  # else every column, in order (they are sorted)
            x = x.index_select(1, columns)
        return x.view(*rows.shape, columns.numel())

    def select(self, folds: torch.Tensor) -> SharedRows:
        """The same rows with only some folds' preprocessing (`Folds.select`)."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in PER_FOLD:
            values[name] = values[name][folds]
        return SharedRows(**values)


def grid_positions(grid: torch.Tensor, length: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Where values `x` `[N, r]` (float64) fall on their columns' grids `[M, r]` (each column
    sorted, the last of its `length` `[r]` points repeated to M): the interval [g-1, g], whose
    fraction `grid_fraction` finds; g = -1 where missing."""
    after = torch.searchsorted(grid.T.contiguous(), x.T.contiguous(), right=True).T.clamp_(min=1)  # first point above
    after = torch.minimum(after, length)
    exact = x == grid.gather(0, after - 1)  # exactly on a grid point: its own value (a tie's is the middle)
    g = torch.where(exact, after, torch.minimum(after, length - 1))
    return torch.where(torch.isnan(x), -1, g)


def grid_fraction(grid: torch.Tensor, length: torch.Tensor, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """How far into its interval [g-1, g] each value `x` `[N, r]` lies (`grid_positions`' g):
    -1 exactly on grid point g-1, 0 where missing; rounded to float32, as it is stored.

    x equals point g-1 only when it was found exactly on it (else it lies strictly between
    points, or beyond the grid's ends), so the fraction follows from g and x alone: an
    all-numeric table stores g and finds the fraction as rows are read (`whole_rows`)."""
    index = g.clamp(min=1)  # a missing value's g (-1) reads a real point; its fraction is set below
    below = grid.gather(0, index - 1)
    exact = x == below
    frac = ((x - below) / (grid.gather(0, torch.minimum(index, length - 1)) - below)).clamp_(0.0, 1.0)
    frac = torch.where(exact, -1.0, frac)
    return torch.where(g < 0, 0.0, frac).float().double()


PER_FOLD = ("fill", "center", "scale", "clip", "p_at", "p_right", "p_left", "p_missing", "ranked", "lookup")
_LOWEST = float(normal_scores(np.array([0.0]))[0])  # where the copies clip a probability of 0


class FoldRows:
    """Row numbers of each fold into `SharedRows`: indexed like a `[k, rows, features]` tensor."""

    def __init__(self, source: SharedRows, rows: torch.Tensor) -> None:
        self.source, self.rows = source, rows  # rows: [k, n] int32 (int64 past 2**31 rows); fold f uses fitted fold f

    @property
    def shape(self) -> torch.Size:
        return torch.Size((*self.rows.shape, self.source.width))

    @property
    def device(self) -> torch.device:
        return self.rows.device

    dtype = torch.float32

    def __getitem__(self, key) -> torch.Tensor | FoldRows:
        """`x[folds]` (a tensor of fold positions: a FoldRows), `x[f]` (one fold, `[n, d]`),
        `x[:, a:b]` (a row range of every fold), `x[folds[:, None], order]` (rows per fold)."""
        every = torch.arange(self.rows.shape[0], device=self.device)
        if isinstance(key, int):
            return self.source.transform(every[key:key + 1], self.rows[key:key + 1])[0]
        if torch.is_tensor(key):
            return FoldRows(self.source.select(key), self.rows[key])
        first, second = key
        if isinstance(first, slice) and first == slice(None):
            return self.source.transform(every, self.rows[:, second])
        folds = first.reshape(-1)
        return self.source.transform(folds, self.rows[folds.unsqueeze(1), second])


def make_shared(dataset, preps: list[Preprocessing], device: torch.device | str) -> SharedRows:
    """The table's rows, once, and each fold's fitted preprocessing, as `SharedRows`."""
    import pandas as pd

    first = preps[0]
    table = first.numeric_columns is not None
    X = dataset.X
    n_rows = len(X)

    def column(j: int) -> np.ndarray:  # one numeric column as float64, as the copies read it
        if table:
            return X[first.numeric_columns[j]].to_numpy(dtype=np.float64, na_value=np.nan)
        return np.asarray(X[:, j], dtype=np.float64)

    ranked = np.array([_ranked(p) for p in preps])  # [K, c]
    rank_columns = np.flatnonzero(ranked.any(0))
    raw_columns = np.flatnonzero(~ranked.all(0))
    # An all-numeric table is already the float32 matrix the folds read: used as it is, and the
    # ranked cells' fractions found as rows are read. A DataFrame's numeric columns are copied out once.
    whole_rows = not table and isinstance(X, np.ndarray) and X.dtype == np.float32 and X.ndim == 2
    if whole_rows:
        numeric = X
    else:
        numeric = np.empty((n_rows, len(raw_columns)), np.float32)
        for i, j in enumerate(raw_columns):
            numeric[:, i] = column(j)

    grids = [np.unique(np.concatenate([p.quantiles[:, j] for p, r in zip(preps, ranked[:, j]) if r]))
             for j in rank_columns]
    grids = [g if len(g) > 1 else np.array([g[0], g[0] + 1.0]) for g in grids]  # a constant: one interval
    M = max((len(g) for g in grids), default=1)
    K, r = len(preps), len(rank_columns)
    p_at, p_right, p_left = (np.zeros((K, M, r)) for _ in range(3))
    p_missing = np.zeros((K, r))
    grid_index = np.empty((n_rows, r), np.int16 if M < 2**15 else np.int32)
    grid_frac = np.empty((0 if whole_rows else n_rows, r), np.float32)
    padded_grids = np.stack([np.pad(g, (0, M - len(g)), mode="edge") for g in grids]) if grids else np.zeros((0, 1))
    lengths = np.array([len(g) for g in grids], np.int64)
    for i, (j, grid) in enumerate(zip(rank_columns, grids)):
        # A column at a time, a block of rows at a time: the search's temporaries stay small.
        values = column(j)
        on_grid, length = torch.from_numpy(padded_grids[i][:, None]), torch.from_numpy(lengths[i:i + 1])
        for start in range(0, n_rows, POSITION_ROWS):
            x = torch.from_numpy(values[start:start + POSITION_ROWS, None])
            g = grid_positions(on_grid, length, x)
            grid_index[start:start + POSITION_ROWS, i] = g[:, 0].numpy()
            if not whole_rows:
                grid_frac[start:start + POSITION_ROWS, i] = grid_fraction(on_grid, length, g, x)[:, 0].numpy()
        padded = padded_grids[i]
        for f, prep in enumerate(preps):
            if not ranked[f, j]:
                continue
            q = prep.quantiles[:, j]
            ref = np.linspace(0, 1, len(q))
            p_at[f, :, i] = quantile_probabilities(padded[:, None], q[:, None])[:, 0]
            # Just right of a point the copies interpolate from the last quantile of a run of
            # ties, just left of it from the first; outside the fold's range they clip (0, 1).
            p_right[f, :, i] = np.where(padded < q[0], 0.0, np.interp(padded, q, ref))
            p_left[f, :, i] = np.where(padded > q[-1], 1.0, -np.interp(-padded, -q[::-1], -ref[::-1]))
            p_missing[f, i] = quantile_probabilities(np.array([[prep.fill[j]]]), q[:, None])[0, 0]

    codes, vocabularies = [], []
    for name in first.categorical_columns:
        strings = category_strings(X[name])
        vocabulary = sorted(strings.dropna().unique().astype(str).tolist())
        codes.append(pd.Index(vocabulary).get_indexer(strings.fillna("\x00missing\x00")).astype(np.int32))
        vocabularies.append(vocabulary)
    codes = np.stack(codes, axis=1) if codes else np.zeros((n_rows, 0), np.int32)
    n_categories = max([len(v) for v in vocabularies], default=0)
    lookup = np.full((K, len(vocabularies), n_categories + 1), -1, dtype=np.int64)
    for f, prep in enumerate(preps):
        offset = prep.n_numeric
        for c, (kept, infrequent, most_frequent) in enumerate(zip(prep.categories, prep.infrequent,
                                                                   prep.most_frequent)):
            position = {name: i for i, name in enumerate(kept)}
            for code, name in enumerate(vocabularies[c]):
                i = position.get(name, len(kept) if infrequent else -1)
                lookup[f, c, code] = offset + i if i >= 0 else -1
            i = position.get(most_frequent, len(kept) if infrequent else -1)  # missing: the training mode
            lookup[f, c, n_categories] = offset + i if i >= 0 else -1
            offset += len(kept) + infrequent

    def tensor(values, dtype=torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(values), dtype=dtype, device=device)

    return SharedRows(
        numeric=tensor(numeric),
        raw_columns=tensor(raw_columns, torch.int64),
        fill=tensor([p.fill[raw_columns] for p in preps]).reshape(K, len(raw_columns)),
        center=tensor([p.center[raw_columns] for p in preps]).reshape(K, len(raw_columns)),
        scale=tensor([p.scale[raw_columns] for p in preps]).reshape(K, len(raw_columns)),
        clip=tensor([p.scaling == "robust" for p in preps], torch.bool),
        grid_index=torch.as_tensor(grid_index, device=device),
        grid_frac=tensor(grid_frac),
        p_at=tensor(p_at, torch.float64),
        p_right=tensor(p_right, torch.float64),
        p_left=tensor(p_left, torch.float64),
        p_missing=tensor(p_missing, torch.float64),
        rank_columns=tensor(rank_columns, torch.int64),
        ranked=tensor(ranked[:, rank_columns], torch.bool).reshape(K, r),
        codes=tensor(codes, torch.int32),
        lookup=tensor(lookup, torch.int64),
        grid=tensor(padded_grids.T if whole_rows else np.zeros((0, 0)), torch.float64).contiguous(),
        grid_length=tensor(lengths if whole_rows else np.zeros(0), torch.int64),
        n_numeric=first.n_numeric,
        width=max(p.n_features for p in preps),
        whole_rows=whole_rows,
    )


def _ranked(p: Preprocessing) -> np.ndarray:
    """[n_numeric] bool: the columns this fold's preprocessing ranks (the quantile transform)."""
    if p.scaling == "quantile":
        return np.ones(p.n_numeric, bool)
    if p.scaling == "auto":
        return np.asarray(p.ranked, bool)
    return np.zeros(p.n_numeric, bool)

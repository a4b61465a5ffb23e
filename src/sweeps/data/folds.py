"""The k folds of the development rows, preprocessed and stacked for the training engine.

The folds and their preprocessing do not depend on a trial's hyperparameters, so they are
made once per process and shared by every trial: each fold's scaler is fitted on that
fold's training part only (no leakage), and each fold's rows are laid out as one slice of
a `[k, rows, features]` tensor so that all k fold-models train together.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import KFold, StratifiedKFold

from sweeps.data.allocator import release_freed_memory
from sweeps.data.dataset import Dataset
from sweeps.errors import SweepsError
from sweeps.data.importance import density_ratios
from sweeps.data.preprocess import Preprocessing
from sweeps.data.shared import FoldRows, make_shared

LAYOUTS = ("auto", "copies", "shared")
# "auto" keeps a preprocessed copy per fold (the fastest layout) while the copies take less
# than this, and shares one copy of the rows beyond it (`sweeps.shared`).
SHARED_ABOVE_BYTES = 2 * 2**30


@dataclass
class Folds:
    """Stacked fold data. Dimension 0 is the fold everywhere.

    Training parts differ in size by a few rows; the shorter ones are topped up with
    repeats of their own rows so that all folds take the same number of equal-sized
    batches (`train_weight` is 0 on those repeats when losses are measured).
    """

    X_train: torch.Tensor | FoldRows  # [k, n_train, d] float32 (FoldRows: one shared copy, `sweeps.shared`)
    y_train: torch.Tensor  # [k, n_train] int64 class index, or float32 standardized target
    train_weight: torch.Tensor  # [k, n_train] 1.0 for real rows, 0.0 for top-up repeats
    X_val: torch.Tensor | FoldRows  # [k, n_val, d]
    y_val: torch.Tensor  # [k, n_val]
    val_weight: torch.Tensor  # [k, n_val] 1.0 for real rows, 0.0 for padding
    target_std: torch.Tensor  # [k] regression: the target's std on each training part (for RMSE)
    n_outputs: int  # classes for classification, 1 for regression
    train_rows: list[np.ndarray]  # per fold: dataset row indices of its training part
    val_rows: list[np.ndarray]  # per fold: dataset row indices of its validation part
    fold_ids: list[int] = field(default_factory=list)  # which folds these are (seeds derive from it)
    n_numeric: int = 0  # the first n_numeric feature columns are numeric (embeddings apply to them)
    preprocessings: list[Preprocessing] = field(default_factory=list)  # per fold, fitted on its training part
    # Classification: real training rows per class, [every fold of the split, classes]. Kept
    # whole by `select`, so what is sized from it (re-sampled epochs) is the same for a fold
    # trained alone or in the stack.
    split_class_counts: np.ndarray | None = None
    # Study(groups=): per validation row, its group's index into group_names (-1: padding or not known)
    val_groups: torch.Tensor | None = None  # [k, n_val] int64
    group_names: tuple[str, ...] = ()
    # Study(target_data=): per training row, its importance weight (sweeps.importance), fitted
    # per fold on its training part and the target rows
    train_importance: torch.Tensor | None = None  # [k, n_train] float32
    # Study(target_data=): the target rows, preprocessed by each fold's preprocessing (the
    # domain-adversarial option feeds them to the network: `sweeps.domain`)
    target_X: torch.Tensor | None = None  # [k, n_target, d] float32

    def __post_init__(self) -> None:
        if not self.fold_ids:
            self.fold_ids = list(range(self.k))
        if self.split_class_counts is None and self.classification:
            # Counted by weight (1 on real rows, 0 on top-up repeats; float64: exact) rather than by
            # selecting the real rows, a copy of each fold's targets: 100 MB at 3M rows.
            self.split_class_counts = np.stack([
                torch.bincount(self.y_train[f], weights=self.train_weight[f].double(), minlength=self.n_outputs)
                .to(torch.int64).cpu().numpy() for f in range(self.k)])

    def select(self, fold_ids: list[int]) -> Folds:
        """The same data restricted to some folds (e.g. to train one fold alone)."""
        pos = [self.fold_ids.index(f) for f in fold_ids]
        index = torch.tensor(pos, device=self.X_train.device)
        return Folds(self.X_train[index], self.y_train[index], self.train_weight[index],
                     self.X_val[index], self.y_val[index], self.val_weight[index],
                     self.target_std[index], self.n_outputs, [self.train_rows[p] for p in pos],
                     [self.val_rows[p] for p in pos], list(fold_ids), self.n_numeric,
                     [self.preprocessings[p] for p in pos] if self.preprocessings else [],
                     self.split_class_counts, None if self.val_groups is None else self.val_groups[index],
                     self.group_names, None if self.train_importance is None else self.train_importance[index],
                     None if self.target_X is None else self.target_X[index])

    @property
    def k(self) -> int:
        return self.X_train.shape[0]

    @property
    def n_features(self) -> int:
        return self.X_train.shape[2]

    @property
    def classification(self) -> bool:
        return self.y_train.dtype == torch.int64

    @property
    def shared(self) -> bool:
        """One copy of the rows, preprocessed per fold as they are read (`sweeps.shared`)."""
        return isinstance(self.X_train, FoldRows)

    @property
    def category_blocks(self) -> list[list[tuple[int, int]]]:
        """Per fold, its categorical columns' blocks of one-hot columns: (first, count), counted
        after the numeric columns (`engine.categories`); empty lists for data without text columns."""
        found = []
        for prep in self.preprocessings:
            start, fold = 0, []
            for kept, infrequent in zip(prep.categories, prep.infrequent):
                fold.append((start, len(kept) + int(infrequent)))
                start += len(kept) + int(infrequent)
            found.append(fold)
        return found

    @property
    def has_validation(self) -> bool:
        return self.X_val.shape[1] > 0


def split_folds(dataset: Dataset, folds: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(train_rows, val_rows) per fold, as dataset row indices; never a test row.

    int32 where the table has fewer than 2**31 rows: every fold's row numbers are held while
    the folds are laid out, 5 x 24 MB at 3M rows as int64."""
    dev = dataset.dev
    if dataset.classes is not None:
        splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = splitter.split(dev, dataset.y[dev])
    else:
        splits = KFold(n_splits=folds, shuffle=True, random_state=seed).split(dev)
    numbers = row_number_type(len(dataset.y))
    return [(dev[train].astype(numbers), dev[val].astype(numbers)) for train, val in splits]


def row_number_type(rows: int) -> type:
    """int32 where a table's row numbers fit it: half the memory of int64."""
    return np.int32 if rows < 2**31 else np.int64


def fit_preprocessing(dataset: Dataset, rows: np.ndarray, scaling: str = "standard") -> Preprocessing:
    """The preprocessing fitted on `rows` only (features, and the target for regression)."""
    y = dataset.y[rows] if dataset.classes is None else None
    return Preprocessing.fit(dataset.X, y, scaling, rows=rows)


def make_folds(dataset: Dataset, folds: int, seed: int, device: torch.device | str = "cpu",
               train_fraction: float = 1.0, scaling: str = "standard", layout: str | None = None) -> Folds:
    """Preprocess each fold on its own training part and stack all folds on `device`.

    `train_fraction` < 1 keeps a seeded random part of each fold's training rows (the
    validation rows stay whole): the points of a learning curve. `layout`: "copies" (a
    preprocessed copy of its rows per fold), "shared" (one copy of the rows, `sweeps.shared`)
    or "auto" (shared once the copies would pass `SHARED_ABOVE_BYTES`); default: the
    environment's `SWEEPS_FOLD_ROWS`, else "auto".
    """
    splits = split_folds(dataset, folds, seed)
    if train_fraction < 1.0:
        rng = np.random.default_rng([seed, int(train_fraction * 1000)])
        splits = [(np.sort(rng.choice(train, max(1, round(train_fraction * len(train))), replace=False)), val)
                  for train, val in splits]
    folds = _stack(dataset, splits, seed, device, scaling, fold_layout(layout))
    release_freed_memory()  # fitting's temporaries, freed but kept by the C allocator
    return folds


def fold_layout(layout: str | None = None) -> str:
    layout = layout or os.environ.get("SWEEPS_FOLD_ROWS") or "auto"
    if layout not in LAYOUTS:
        raise SweepsError(f"SWEEPS_FOLD_ROWS must be one of {', '.join(LAYOUTS)}, got {layout!r}.")
    return layout


def make_final_fit(dataset: Dataset, device: torch.device | str = "cpu", scaling: str = "standard",
                   copies: int = 1) -> tuple[Folds, Preprocessing]:
    """"Folds" that train on every non-test row, with no validation rows, and their preprocessing.

    The preprocessing is fitted on those rows only; the held-out test rows stay unseen.
    `copies` > 1 stacks that many copies of the rows: refits that differ only in their seeds
    (each stack position derives its own), trained together.
    """
    folds = _stack(dataset, [(dataset.dev, dataset.dev[:0])] * copies, seed=0, device=device, scaling=scaling,
                   layout=fold_layout())
    return folds, folds.preprocessings[0]


def _stack(dataset: Dataset, splits: list[tuple[np.ndarray, np.ndarray]], seed: int,
           device: torch.device | str, scaling: str = "standard", layout: str = "copies") -> Folds:
    rng = np.random.default_rng(seed)
    n_train = max(len(train) for train, _ in splits)
    n_val = max(len(val) for _, val in splits)
    classification = dataset.classes is not None
    shared = layout == "shared"
    K = len(splits)
    numbers = row_number_type(len(dataset.y))
    # Per fold and padded row: its row number, target and weight, written in place (a list of
    # per-fold arrays stacked at the end held each twice: 150 MB at 3M rows).
    rows_train, rows_val = np.empty((K, n_train), numbers), np.empty((K, n_val), numbers)
    y_type = np.int64 if classification else np.float32
    y_train, y_val = np.empty((K, n_train), y_type), np.empty((K, n_val), y_type)
    w_train, w_val = np.zeros((K, n_train), np.float32), np.zeros((K, n_val), np.float32)

    stds, preps, val_groups, importance, target_X = [], [], [], [], []
    for f, (train, val) in enumerate(splits):
        same_rows = bool(preps) and train is splits[0][0]  # copies of one final fit: fitted once
        prep = preps[0] if same_rows else fit_preprocessing(dataset, train, scaling)
        preps.append(prep)
        rows_train[f, :len(train)] = train
        if n_train > len(train):  # top-up repeats (drawn only where needed: the seeded draws stay as they were)
            rows_train[f, len(train):] = rng.choice(train, n_train - len(train), replace=False)
        rows_val[f, :len(val)] = val
        rows_val[f, len(val):] = val[0] if len(val) else 0
        if layout == "auto":  # decided on the first fold's width: the copies' size against the bound
            copies = len(splits) * (n_train + n_val) * prep.n_features * 4
            layout = "shared" if copies > SHARED_ABOVE_BYTES else "copies"
            shared = layout == "shared"
        w_train[f, :len(train)] = 1.0
        w_val[f, :len(val)] = 1.0
        if dataset.groups is not None:
            val_groups.append(np.where(w_val[f] > 0, dataset.groups[rows_val[f]], -1))
        if classification:
            y_train[f], y_val[f] = dataset.y[rows_train[f]], dataset.y[rows_val[f]]
        else:
            y_train[f], y_val[f] = prep.target(dataset.y[rows_train[f]]), prep.target(dataset.y[rows_val[f]])
        stds.append(prep.y_std)

    def stack(arrays: list, dtype: torch.dtype | None) -> torch.Tensor:
        return torch.as_tensor(np.stack(arrays), dtype=dtype, device=device).contiguous()

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(array, device=device)

    if shared:
        source = make_shared(dataset, preps, device)
        X_train = FoldRows(source, tensor(rows_train))  # their own type: int32 where it fits
        X_val = FoldRows(source, tensor(rows_val))
    else:
        # Each fold's rows are preprocessed straight into their place in the stack: the copies
        # are the only full-size arrays made. One-hot encoders fitted on different training
        # parts may see different categories; narrower folds get zero columns (inputs that
        # never fire) so all folds stack.
        width = max(p.n_features for p in preps)
        X_train = np.zeros((len(splits), n_train, width), np.float32)
        X_val = np.zeros((len(splits), n_val, width), np.float32)
        for f, prep in enumerate(preps):
            if f > 0 and splits[f][0] is splits[0][0]:  # copies of one final fit: the same rows, once
                X_train[f] = X_train[0]
                continue
            prep.features(dataset.X, rows_train[f], out=X_train[f])
            prep.features(dataset.X, rows_val[f], out=X_val[f])  # a final fit: no validation rows
    if dataset.target is not None:  # importance weights, from each fold's training rows only
        for f, (train, _) in enumerate(splits):
            same_rows = f > 0 and train is splits[0][0]
            features = preps[f].features(dataset.X, rows_train[f]) if shared else X_train[f, :, :preps[f].n_features]
            target_X.append(target_X[0] if same_rows else preps[f].features(dataset.target))
            importance.append(importance[0] if same_rows else density_ratios(
                features, target_X[-1], np.arange(n_train) < len(train), seed))
    if not shared:
        X_train = torch.as_tensor(X_train, device=device)
        X_val = torch.as_tensor(X_val, device=device)
    return Folds(
        X_train=X_train,
        y_train=tensor(y_train),
        train_weight=tensor(w_train),
        X_val=X_val,
        y_val=tensor(y_val),
        val_weight=tensor(w_val),
        target_std=torch.tensor(stds, dtype=torch.float32, device=device),
        n_outputs=len(dataset.classes) if classification else 1,
        train_rows=[train.astype(numbers, copy=False) for train, _ in splits],
        val_rows=[val.astype(numbers, copy=False) for _, val in splits],
        n_numeric=prep.n_numeric,
        preprocessings=preps,
        val_groups=stack(val_groups, torch.int64) if dataset.groups is not None else None,
        group_names=dataset.group_names,
        train_importance=stack(importance, torch.float32) if importance else None,
        target_X=stack([np.pad(x, ((0, 0), (0, X_train.shape[2] - x.shape[1]))) for x in target_X], torch.float32)
        if target_X else None,
    )

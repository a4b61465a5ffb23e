"""One copy of the rows (`sweeps.data.shared`): the same features, the same training, a fraction of the memory."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import sweeps.data.folds
import sweeps.data.shared
import sweeps.engine.batches
from sweeps import Space, Table
from sweeps.data.cache import cached_folds
from sweeps.data.dataset import load_dataset
from sweeps.results.evaluate import evaluate_study
from sweeps.data.folds import make_folds
from sweeps.sweep.optimize import run_study
from sweeps.engine.config import NetConfig
from sweeps.engine.train import train_folds

from conftest import ADULT, DATA, digits_study



@pytest.fixture(scope="module")
def adult_path(tmp_path_factory) -> Path:
    """3,000 real adult rows, plus a column of 70 categories (rare ones: the infrequent column)
    whose last category appears only among the last rows (unseen by some folds' training parts)."""
    frame = pd.read_csv(DATA / "adult-train.csv.gz", header=None, names=ADULT, skipinitialspace=True, nrows=3000)
    rng = np.random.default_rng(0)
    many = rng.zipf(1.6, len(frame)).clip(max=69)
    frame["many"] = [f"c{v}" for v in many]
    frame.loc[frame.index[-3:], "many"] = "only-at-the-end"
    frame.loc[frame.index[::37], "many"] = np.nan
    path = tmp_path_factory.mktemp("adult") / "adult.csv"
    frame.to_csv(path, index=False)
    return path


def adult_spec(path, scaling="auto", **changes):
    return digits_study(name="adult-shared", data=Table(path, target="income"),
                        space=Space(depth=1, width=(16, 32), lr=(1e-3, 1e-2), batch_size=128),
                        preprocessing=scaling, folds=3, max_epochs=4, patience=2, n_trials=2, **changes)


@pytest.mark.parametrize("scaling", ["auto", "standard", "robust", "quantile"])
def test_shared_rows_give_the_features_of_the_copies(adult_path, scaling):
    dataset = load_dataset(adult_spec(adult_path, scaling))
    copies = make_folds(dataset, 3, 0, scaling=scaling, layout="copies")
    shared = make_folds(dataset, 3, 0, scaling=scaling, layout="shared")
    assert shared.shared and not copies.shared and shared.X_train.shape == copies.X_train.shape
    # float32 arithmetic where the copies use float64: equal to float32's resolution
    torch.testing.assert_close(shared.X_train[:, :], copies.X_train, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(shared.X_val[:, :], copies.X_val, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(shared.X_train[1], copies.X_train[1], atol=2e-5, rtol=1e-5)
    some = torch.tensor([2, 0])
    torch.testing.assert_close(shared.select([2, 0]).X_val[:, 5:50], copies.X_val[some, 5:50], atol=2e-5, rtol=1e-5)
    order = torch.stack([torch.randperm(shared.X_train.shape[1])[:300] for _ in range(2)])
    torch.testing.assert_close(shared.X_train[some.unsqueeze(1), order], copies.X_train[some.unsqueeze(1), order],
                               atol=2e-5, rtol=1e-5)
    one_hot = copies.X_train[:, :, copies.n_numeric:]
    assert set(one_hot.unique().tolist()) == {0.0, 1.0}  # the categorical part is exact, not close
    assert torch.equal(shared.X_train[:, :][:, :, copies.n_numeric:], one_hot)


def wine_spec(scaling="auto"):
    """Wine red: 11 numeric columns, complete, read as one float32 matrix; "auto" ranks the
    continuous ones and scales the few-level ones, so both kinds are read from the matrix."""
    from sweeps.spec.study import load_study_file

    return load_study_file(Path(__file__).parents[2] / "studies" / "wine_red.py").replace(
        preprocessing=scaling, folds=3)


@pytest.mark.parametrize("scaling", ["auto", "standard", "robust", "quantile"])
def test_an_all_numeric_table_shares_its_own_matrix_and_gives_the_features_of_the_copies(scaling):
    dataset = load_dataset(wine_spec(scaling))
    assert isinstance(dataset.X, np.ndarray) and dataset.X.dtype == np.float32
    copies = make_folds(dataset, 3, 0, scaling=scaling, layout="copies")
    shared = make_folds(dataset, 3, 0, scaling=scaling, layout="shared")
    source = shared.X_train.source
    # The rows are the dataset's matrix, not a copy; of the ranked columns' grid positions only
    # the interval is stored (int16), the fraction into it is found as rows are read.
    assert source.whole_rows and np.shares_memory(source.numeric.numpy(), dataset.X)
    assert source.grid_frac.shape[0] == 0 and source.grid_index.dtype == torch.int16
    assert source.grid_index.shape == (len(dataset.y), source.rank_columns.numel())
    if scaling in ("auto", "quantile"):
        assert source.rank_columns.numel() > 0
    torch.testing.assert_close(shared.X_train[:, :], copies.X_train, atol=2e-5, rtol=1e-5)
    torch.testing.assert_close(shared.X_val[:, :], copies.X_val, atol=2e-5, rtol=1e-5)
    some = torch.tensor([2, 0])
    order = torch.stack([torch.randperm(shared.X_train.shape[1])[:300] for _ in range(2)])
    torch.testing.assert_close(shared.X_train[some.unsqueeze(1), order], copies.X_train[some.unsqueeze(1), order],
                               atol=2e-5, rtol=1e-5)


def test_grid_fractions_found_while_reading_are_the_stored_ones():
    # The same numbers whether stored (adult's DataFrame keeps storing them) or found as rows
    # are read: values on a grid point, between points, below and above the grid, and missing.
    grid = torch.tensor([[0.0, 1.0, 2.0, 4.0, 4.0], [-1.0, 3.0, 3.0, 3.0, 3.0]], dtype=torch.float64).T
    length = torch.tensor([4, 2])
    x = torch.tensor([[-5.0, 0.0, 0.5, 1.0, 3.0, 4.0, 9.0, float("nan")],
                      [-1.0, 0.0, 3.0, 7.0, -2.0, 1.0, 2.9, 3.0]], dtype=torch.float64).T
    g = sweeps.data.shared.grid_positions(grid, length, x)
    frac = sweeps.data.shared.grid_fraction(grid, length, g, x)
    assert g.T.tolist() == [[1, 1, 1, 2, 3, 4, 3, -1], [1, 1, 2, 1, 1, 1, 1, 2]]
    assert frac.T.tolist() == [[0.0, -1.0, 0.5, -1.0, 0.5, -1.0, 1.0, 0.0],
                               [-1.0, 0.25, -1.0, 1.0, 0.0, 0.5, float(np.float32(0.975)), -1.0]]


def test_an_all_numeric_tables_folds_come_back_from_the_cache_around_its_matrix(monkeypatch):
    monkeypatch.setenv("SWEEPS_FOLD_ROWS", "shared")  # wine is small: "auto" would keep copies
    fresh = cached_folds(load_dataset(wine_spec()), 3, 0, scaling="auto")
    reloaded = load_dataset(wine_spec())  # as a worker or a rerun: its own matrix
    again = cached_folds(reloaded, 3, 0, scaling="auto")
    assert again.shared and again.X_train.source.whole_rows
    # The entry holds no copy of the rows: they are the loaded dataset's matrix.
    assert np.shares_memory(again.X_train.source.numeric.numpy(), reloaded.X)
    assert torch.equal(again.X_train[:, :], fresh.X_train[:, :]) and torch.equal(again.X_val[:, :], fresh.X_val[:, :])


def test_training_on_shared_rows_matches_the_copies_across_windows(adult_path, monkeypatch):
    monkeypatch.setattr(sweeps.data.shared, "WINDOW_ROWS", 512)  # 4 windows of 128-row batches per epoch
    monkeypatch.setattr(sweeps.engine.batches, "WINDOW_ROWS", 512)
    dataset = load_dataset(adult_spec(adult_path))
    config = NetConfig(depth=2, width=32, dropout=0.1, weight_decay=1e-4, lr=3e-3, batch_size=128, noise=0.05)
    results = [train_folds(make_folds(dataset, 3, 0, scaling="auto", layout=layout), config, max_epochs=4,
                           patience=None, seed=3) for layout in ("copies", "shared")]
    np.testing.assert_allclose(results[1].val_losses, results[0].val_losses, rtol=2e-4)
    np.testing.assert_allclose(results[1].train_losses, results[0].train_losses, rtol=2e-4)


def test_a_large_read_is_transformed_in_pieces_and_gives_the_same_features(adult_path, monkeypatch):
    """A window (16,384 rows of every fold) or a validation chunk (65,536) is transformed
    TRANSFORM_ROWS at a time: its float64 temporaries would otherwise be k x rows x ranked
    columns each, and glibc keeps such freed blocks resident (the epoch's peak)."""
    dataset = load_dataset(adult_spec(adult_path))
    shared = make_folds(dataset, 3, 0, scaling="auto", layout="shared")
    whole = shared.X_val[:, :700]
    seen = []
    original = sweeps.data.shared.SharedRows._transform

    def spy(self, rows, out):
        seen.append(rows.shape[1])
        return original(self, rows, out)

    monkeypatch.setattr(sweeps.data.shared, "TRANSFORM_ROWS", 256)
    monkeypatch.setattr(sweeps.data.shared.SharedRows, "_transform", spy)
    assert torch.equal(shared.X_val[:, :700], whole)
    assert seen == [256, 256, 188]


def test_one_copy_of_the_rows_whatever_the_folds(adult_path):
    dataset = load_dataset(adult_spec(adult_path))
    copies = make_folds(dataset, 5, 0, scaling="auto", layout="copies")
    shared = make_folds(dataset, 5, 0, scaling="auto", layout="shared")
    copied = sum(t.numel() * t.element_size() for t in (copies.X_train, copies.X_val))
    source = shared.X_train.source
    per_row = (source.numeric, source.codes, source.grid_index, source.grid_frac)
    rows = sum(t.numel() * t.element_size() for t in per_row)
    design = len(dataset.y) * shared.n_features * 4  # the whole table, preprocessed, as float32
    assert copied >= 5 * len(dataset.dev) * shared.n_features * 4  # k copies of every development row
    assert rows < design / 2  # values, grid positions and category codes: less than half a preprocessed copy
    # each fold's row numbers, int32: 4 bytes per row and fold (int64 took twice that)
    assert shared.X_train.rows.dtype == shared.X_val.rows.dtype == torch.int32
    assert all(r.dtype == np.int32 for r in shared.train_rows + shared.val_rows + copies.train_rows)
    numbers = shared.X_train.rows.numel() * 4 + shared.X_val.rows.numel() * 4
    assert rows + numbers < copied / 3
    # What each fold fitted does not grow with the rows: probabilities on a grid of at most
    # k x 1,000 quantiles per ranked column, medians, scales, the category lookups.
    fitted = sum(getattr(source, name).numel() * getattr(source, name).element_size()
                 for name in sweeps.data.shared.PER_FOLD)
    ranked = source.rank_columns.numel()
    assert fitted < 5 * ranked * 5 * 1000 * 8 * 3 + 100_000


def test_auto_shares_the_rows_of_big_tables_only(adult_path, monkeypatch):
    dataset = load_dataset(adult_spec(adult_path))
    assert not make_folds(dataset, 3, 0).shared
    monkeypatch.setattr(sweeps.data.folds, "SHARED_ABOVE_BYTES", 1_000_000)
    assert make_folds(dataset, 3, 0).shared
    monkeypatch.setenv("SWEEPS_FOLD_ROWS", "copies")
    assert not make_folds(dataset, 3, 0).shared


def test_shared_folds_are_cached_and_a_study_runs_end_to_end_on_them(adult_path, tmp_path, monkeypatch):
    monkeypatch.setenv("SWEEPS_FOLD_ROWS", "shared")
    spec = adult_spec(adult_path)
    dataset = load_dataset(spec)
    fresh = cached_folds(dataset, 3, 0, scaling="auto")
    again = cached_folds(dataset, 3, 0, scaling="auto")  # from the cache: the rows memory-mapped
    assert again.shared and torch.equal(again.X_train[:, :], fresh.X_train[:, :])
    assert torch.equal(again.X_val[:, :], fresh.X_val[:, :])
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    assert study.best_trial.user_attrs["metric"] > 0.78  # majority class ~0.76
    entry, _ = evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "m.pt"), err=io.StringIO())
    assert entry["metric"] > 0.78

"""The data's identity is its values *and* its columns' names, order and types: a renamed column
never crosses the test set's columns, in a study, in the cache, or in a saved model."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_breast_cancer

import sweeps
from sweeps import Space, SweepsError, Table
from sweeps.data.cache import folds_key
from sweeps.data.dataset import load_dataset
from sweeps.evaluate import main as evaluate_main
from sweeps.results.evaluate import evaluate_study
from sweeps.sweep.optimize import run_study

from conftest import digits_study

COLUMNS = ["radius", "texture", "perimeter", "area", "smoothness"]


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    """An all-numeric table with a header (read as an array: the fast path), and a study swept on it."""
    X, y = load_breast_cancer(return_X_y=True)
    frame = pd.DataFrame(X[:, :5], columns=COLUMNS).assign(y=y)
    folder = tmp_path_factory.mktemp("identity")
    frame.to_csv(folder / "t.csv", index=False)
    spec = digits_study(name="identity", data=Table(folder / "t.csv", target="y"),
                        space=Space(depth=1, width=16, lr=1e-2, embedding="none"), n_trials=1, max_epochs=4)
    url = f"sqlite:///{folder / 'identity.db'}"
    run_study(spec, load_dataset(spec), storage=url, progress=False, out=io.StringIO())
    return frame, folder, spec, url


def rewritten(frame: pd.DataFrame, folder, name: str):
    frame.to_csv(folder / name, index=False)
    return Table(folder / name, target="y")


def test_swapped_header_names_are_refused_by_evaluate(table, tmp_path, capsys, monkeypatch):
    frame, folder, spec, url = table
    swapped = frame.rename(columns={"radius": "texture", "texture": "radius"})  # values stay in place
    changed = spec.replace(data=rewritten(swapped, folder, "swapped.csv"))
    dataset = load_dataset(changed)
    assert dataset.data_hash == load_dataset(spec).data_hash  # the same numbers...
    with pytest.raises(SweepsError, match=r"under those names the values differ \(were the names of 'radius', "
                                          r"'texture' swapped\?\)"):
        evaluate_study(changed, dataset, storage=url, model_path=str(tmp_path / "m.pt"))
    assert not (tmp_path / "m.pt").exists()


def test_reordered_columns_are_read_in_the_study_order(table, tmp_path):
    frame, folder, spec, url = table
    reordered = spec.replace(data=rewritten(frame[list(reversed(COLUMNS)) + ["y"]], folder, "reordered.csv"))
    entry, model = evaluate_study(reordered, load_dataset(reordered), storage=url,
                                  model_path=str(tmp_path / "m.pt"), err=io.StringIO())
    again, _ = evaluate_study(spec, load_dataset(spec), storage=url, model_path=str(tmp_path / "n.pt"), err=io.StringIO())
    assert entry["loss"] == again["loss"]  # the same model on the same test rows, whatever the file's order
    assert list(model.feature_names_in_) == COLUMNS


def test_renamed_or_retyped_columns_are_refused_in_one_line(table, tmp_path, monkeypatch, capsys):
    frame, folder, spec, url = table
    (tmp_path / "s.py").write_text(
        "from sweeps import Space, Study, Table\n"
        f"study = Study(name='identity', task='classification', data=Table({str(folder / 'renamed.csv')!r}, "
        "target='y'), space=Space(depth=1, width=16, lr=1e-2, embedding='none'), folds=3, max_epochs=4, "
        "patience=3, n_trials=1)\n")
    frame.rename(columns={"area": "size"}).to_csv(folder / "renamed.csv", index=False)
    assert evaluate_main([str(tmp_path / "s.py"), "--storage", url]) == 2
    err = capsys.readouterr().err
    assert "made with other columns (added ['size']; removed ['area'])" in err and err.count("\n") == 1
    frame.assign(area=np.where(frame["area"] > 600, "big", "small")).to_csv(folder / "renamed.csv", index=False)
    assert evaluate_main([str(tmp_path / "s.py"), "--storage", url]) == 2
    assert "a column's type changed" in capsys.readouterr().err


def test_the_cache_key_holds_the_names(table):
    frame, folder, spec, _ = table
    swapped = spec.replace(data=rewritten(frame.rename(columns={"radius": "texture", "texture": "radius"}),
                                          folder, "swapped-cache.csv"))
    assert folds_key(load_dataset(spec), 3, 0, "auto") != folds_key(load_dataset(swapped), 3, 0, "auto")


def test_a_model_of_an_all_numeric_table_reads_columns_by_name(table, tmp_path):
    frame, folder, spec, url = table
    _, model = evaluate_study(spec, load_dataset(spec), storage=url, model_path=str(tmp_path / "m.pt"), err=io.StringIO())
    model = sweeps.load_model(tmp_path / "m.pt")
    X = frame[COLUMNS].head(50)
    assert list(model.feature_names_in_) == COLUMNS and model.n_features_in_ == 5
    expected = model.predict_proba(X)
    np.testing.assert_array_equal(model.predict_proba(X[list(reversed(COLUMNS))]), expected)
    np.testing.assert_array_equal(model.predict_proba(X.to_numpy()), expected)  # an array: by position
    with pytest.raises(SweepsError, match=r"missing \['area'\]"):
        model.predict(X.drop(columns="area"))
    with pytest.raises(SweepsError, match=r"extra \['id'\]"):
        model.predict(X.assign(id=0))
    # A missing value is filled with the training median, as documented (not refused).
    gap = X.copy()
    gap.loc[gap.index[0], "area"] = np.nan
    filled = X.copy()
    filled.loc[filled.index[0], "area"] = np.median(frame["area"])  # about the folds' medians
    assert np.isfinite(model.predict_proba(gap)).all()
    assert np.abs(model.predict_proba(gap)[0] - model.predict_proba(filled)[0]).max() < 0.05
    with pytest.raises(SweepsError, match="infinite values"):
        model.predict(X.assign(area=np.inf))

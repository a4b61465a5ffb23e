"""Tables: CSV/Parquet with mixed types and missing values, preprocessed per fold, no leakage."""

from __future__ import annotations

import io
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sweeps
from sweeps.engine.trained import UnseenCategoryWarning
from sweeps import Space, Study, SweepsError, Table
from sweeps.data.dataset import load_dataset
from sweeps.results.evaluate import evaluate_study
from sweeps.data.folds import make_folds
from sweeps.run import main as run_main
from sweeps.sweep.optimize import run_study
from sweeps.spec.study import load_study_file

from conftest import ADULT, DATA, digits_study



@pytest.fixture(scope="module")
def adult_sample(tmp_path_factory) -> Path:
    """3,000 real adult rows: mixed types, missing values as '?'."""
    frame = pd.read_csv(DATA / "adult-train.csv.gz", header=None, names=ADULT, skipinitialspace=True, nrows=3000)
    path = tmp_path_factory.mktemp("adult") / "adult.csv"
    frame.to_csv(path, index=False)
    return path


def adult_study(path, **changes):
    fields = dict(name="adult-test", data=Table(path, target="income"),
                  space=Space(depth=1, width=(16, 32), dropout=0.1, weight_decay=1e-4, lr=(1e-3, 1e-2),
                              batch_size=128),
                  folds=3, max_epochs=6, patience=3, n_trials=2)
    fields.update(changes)
    return digits_study(**fields)


def test_mixed_types_and_missing_values_train_end_to_end(adult_sample, tmp_path):
    spec = adult_study(adult_sample)
    dataset = load_dataset(spec)
    assert dataset.is_table and dataset.X.isna().any().any()  # '?' became missing values
    folds = make_folds(dataset, 3, 0)
    assert folds.X_train.shape[2] > 50  # numeric columns + one-hot categories
    assert not torch_has_nan(folds.X_train)  # imputed
    url = f"sqlite:///{tmp_path / 'a.db'}"
    study = run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    assert study.best_trial.user_attrs["metric"] > 0.78  # majority class is ~0.76; ~0.83 here
    entry, model = evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "m.pt"), err=io.StringIO())
    X_test = dataset.rows(dataset.test)
    reloaded = sweeps.load_model(tmp_path / "m.pt")
    # Test rows with categories no fold kept ("Without-pay"): counted in the report, and warned of
    # once per call by predict.
    assert entry["unseen_categories"] >= 1
    with pytest.warns(UnseenCategoryWarning, match=rf"{entry['unseen_categories']} value\(s\)") as caught:
        np.testing.assert_array_equal(reloaded.predict_proba(X_test), model.predict_proba(X_test))
    assert len(caught) == 2  # one per call
    assert set(reloaded.predict(X_test.head(20))) <= {"<=50K", ">50K"}
    with pytest.raises(SweepsError, match=r"missing \['age'\]"):
        reloaded.predict(X_test.drop(columns=["age"]))
    reordered = X_test[list(reversed(X_test.columns))]
    with pytest.warns(UnseenCategoryWarning):
        np.testing.assert_array_equal(reloaded.predict_proba(reordered), model.predict_proba(X_test))
    with pytest.raises(SweepsError, match=r"extra \['id'\]"):
        reloaded.predict(X_test.assign(id=1))
    with pytest.raises(SweepsError, match=r"column 'age' was numeric in training, but holds 'old'"):
        reloaded.predict(X_test.head(3).assign(age=["old", "30", None]))


def torch_has_nan(tensor) -> bool:
    return bool(tensor.isnan().any())


@pytest.mark.parametrize("layout", ["copies", "shared"])
def test_the_pipeline_never_sees_validation_or_test_rows(adult_sample, monkeypatch, layout):
    from sweeps.data.preprocess import Preprocessing

    seen = []
    original = Preprocessing.fit.__func__

    def spy(cls, X, y=None, scaling="standard", rows=None):
        seen.append(set(X.index if rows is None else X.index[rows]))  # the rows it fits on
        return original(cls, X, y, scaling, rows)

    monkeypatch.setattr(Preprocessing, "fit", classmethod(spy))
    dataset = load_dataset(adult_study(adult_sample))
    folds = make_folds(dataset, 3, 0, layout=layout)
    assert len(seen) == 3
    test = set(dataset.test.tolist())
    for rows, train, val in zip(seen, folds.train_rows, folds.val_rows):
        assert rows == set(train.tolist())  # exactly the fold's training part
        assert not rows & set(val.tolist()) and not rows & test


@pytest.mark.parametrize("scaling", ["standard", "robust", "quantile", "auto"])
@pytest.mark.parametrize("layout", ["copies", "shared"])
def test_every_scaling_is_fitted_on_the_folds_training_rows_alone(adult_sample, scaling, layout):
    # Whatever the scaling fits (means, medians and IQRs, quantile tables), each fold's fitted
    # numbers are exactly those of its training rows: a test or validation row anywhere in a
    # median or a quantile table changes them.
    from sweeps.data.preprocess import Preprocessing

    dataset = load_dataset(adult_study(adult_sample, preprocessing=scaling))
    folds = make_folds(dataset, 3, 0, layout=layout, scaling=scaling)
    for fitted, train in zip(folds.preprocessings, folds.train_rows):
        expected = Preprocessing.fit(dataset.X.iloc[train], scaling=scaling)
        (meta, arrays), (meta_expected, arrays_expected) = fitted.state(), expected.state()
        assert meta == meta_expected and arrays.keys() == arrays_expected.keys()
        for name in arrays:
            np.testing.assert_array_equal(arrays[name], arrays_expected[name], err_msg=f"{scaling}: {name}")


@pytest.mark.parametrize("edit, message", [
    (lambda f: f.assign(empty=np.nan), r"column 'empty' is missing in every row; drop it \(drop=\['empty'\]\)"),
    (lambda f: f.assign(name=[f"person {i}" for i in range(len(f))]), r"column 'name' has a distinct value in every row"),
    (lambda f: f.assign(row=np.arange(len(f))), r"column 'row' numbers the rows"),
    (lambda f: f.assign(age=f["age"].astype(str).where(f.index != 7, "forty")),
     r"column 'age' is numeric except 1 value\(s\) such as 'forty'"),
])
def test_unusable_columns_are_named(adult_sample, tmp_path, edit, message):
    path = tmp_path / "bad.csv"
    edit(pd.read_csv(adult_sample)).to_csv(path, index=False)
    with pytest.raises(SweepsError, match=message):
        load_dataset(adult_study(path))


def test_bad_files_and_targets(adult_sample, tmp_path):
    with pytest.raises(SweepsError, match=r"Table: no such file"):
        load_dataset(adult_study(tmp_path / "nope.csv"))
    study_file = tmp_path / "study.py"  # a relative path: looked for beside the study file, then here
    study_file.write_text("from sweeps import Study, Table\nstudy = Study(name='t', task='classification', "
                          "data=Table('data/nope.csv', target='income'))\n")
    from sweeps.spec.study import load_study_file

    with pytest.raises(SweepsError, match=r"Table: no such file data/nope.csv \(looked for .*data/nope.csv and "):
        load_dataset(load_study_file(study_file))
    with pytest.raises(SweepsError, match=r"no target column 'salary'; columns are age, workclass"):
        load_dataset(adult_study(adult_sample, data=Table(adult_sample, target="salary")))
    frame = pd.read_csv(adult_sample)
    frame.loc[3, "income"] = np.nan
    frame.to_csv(tmp_path / "gap.csv", index=False)
    with pytest.raises(SweepsError, match=r"the target 'income' is missing in 1 row"):
        load_dataset(adult_study(tmp_path / "gap.csv"))
    frame = pd.read_csv(adult_sample).assign(income="<=50K")
    frame.to_csv(tmp_path / "one.csv", index=False)
    with pytest.raises(SweepsError, match=r"single class \('<=50K'\)"):
        load_dataset(adult_study(tmp_path / "one.csv"))
    pd.read_csv(adult_sample).head(0).to_csv(tmp_path / "header.csv", index=False)
    with pytest.raises(SweepsError, match=r"header.csv: has column names but no rows of data"):
        load_dataset(adult_study(tmp_path / "header.csv"))
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(SweepsError, match=r"empty.csv: the file is empty"):
        load_dataset(adult_study(tmp_path / "empty.csv"))


def test_cli_bad_table_is_exit_2_and_nothing_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.py").write_text(textwrap.dedent("""
        from sweeps import Study, Table
        study = Study(name="t", task="classification", data=Table("missing.csv", target="y"))
    """))
    assert run_main([str(tmp_path / "s.py"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Table: no such file" in err and "Traceback" not in err
    assert not (tmp_path / "storage").exists()


def test_relative_paths_are_found_next_to_the_study_file(adult_sample, tmp_path, monkeypatch):
    folder = tmp_path / "project"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "adult.csv").write_bytes(adult_sample.read_bytes())
    (folder / "s.py").write_text('from sweeps import Study, Table\n'
                                 'study = Study(name="t", task="classification", data=Table("data/adult.csv", target="income"))\n')
    monkeypatch.chdir(tmp_path)  # elsewhere
    assert len(load_dataset(load_study_file(folder / "s.py")).y) == 3000


def test_parquet(adult_sample, tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "adult.parquet"
    pd.read_csv(adult_sample).to_parquet(path)
    csv, parquet = load_dataset(adult_study(adult_sample)), load_dataset(adult_study(path))
    assert csv.X.shape == parquet.X.shape and np.array_equal(csv.y, parquet.y)


def numeric_parquet(path: Path, **changes) -> pd.DataFrame:
    """A complete table of floating columns (float64 and float32, one of whole numbers)."""
    rng = np.random.default_rng(0)
    n = 2000
    frame = pd.DataFrame({"a": rng.normal(size=n), "b": rng.normal(size=n).astype(np.float32),
                          "c": rng.integers(-3, 40, n).astype(float), "d": (rng.random(n) > 0.5).astype(np.float32),
                          "e": rng.normal(size=n) * 1e6, "noise": rng.normal(size=n),
                          "y": rng.integers(0, 3, n)})
    frame = frame.assign(**changes)
    frame.to_parquet(path, index=False)
    return frame


def test_a_numeric_parquet_table_is_read_into_its_float32_matrix_without_a_dataframe(tmp_path, monkeypatch):
    # Through pandas, a big all-numeric table was held three times at once (Arrow's columns,
    # the DataFrame's, the matrix): it is now read a column at a time into the matrix, which
    # training then uses as it is. It must be what the DataFrame path gives, exactly: the
    # same matrix, columns, target and fingerprint (a study made before must still match).
    pytest.importorskip("pyarrow")
    from sweeps.data import dataset as datasets

    path = tmp_path / "numeric.parquet"
    numeric_parquet(path)
    table = Table(path, target="y", drop=["noise"])
    frame = table.read()
    X_old, y_old = frame.drop(columns=["y", "noise"]), frame["y"]
    monkeypatch.setattr(Table, "read", lambda self: pytest.fail("read through a DataFrame"))
    X, y = table()
    matrix = datasets._features(X)
    assert np.shares_memory(matrix, X.to_numpy()) and matrix.flags.writeable  # the matrix, not a copy
    assert matrix.dtype == np.float32 and np.array_equal(matrix, datasets._features(X_old))
    assert datasets.column_schema(X) == datasets.column_schema(X_old) == (("a", "b", "c", "d", "e"), ("numeric",) * 5)
    assert y.name == "y" and y.dtype == y_old.dtype and np.array_equal(y, y_old)
    assert datasets._data_hash(matrix, y.to_numpy()) == datasets._data_hash(datasets._features(X_old), y_old.to_numpy())
    spec = Study(name="n", task="classification", data=table, space=Space(), folds=3)
    assert load_dataset(spec).X.shape == (2000, 5)


def with_cell(column: str, value):
    def change(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame.astype({column: float})
        frame.loc[5, column] = value
        return frame
    return change


@pytest.mark.parametrize("change, message", [
    (with_cell("a", np.inf), "1 NaN or infinite value"),
    (with_cell("a", 1e39), "too large for float32"),
    (lambda f: f.assign(c=np.arange(len(f))), "column 'c' numbers the rows"),  # an integer column: a DataFrame
    (with_cell("y", np.nan), "the target 'y' is missing in 1 row"),
])
def test_a_parquet_table_the_matrix_cannot_take_is_refused_as_from_a_dataframe(tmp_path, change, message):
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    change(numeric_parquet(path)).to_parquet(path, index=False)
    spec = Study(name="n", task="classification", data=Table(path, target="y"), space=Space(), folds=3)
    with pytest.raises(SweepsError, match=message):
        load_dataset(spec)


def test_a_damaged_parquet_table_is_one_line_naming_the_file(tmp_path):
    # Its footer intact (the columns' types read fine), a column's pages overwritten: the read
    # fails inside the matrix path, and the message is the DataFrame path's, not a traceback.
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    numeric_parquet(path)
    data = bytearray(path.read_bytes())
    data[8:len(data) // 2] = b"\xff" * (len(data) // 2 - 8)
    path.write_bytes(bytes(data))
    spec = Study(name="n", task="classification", data=Table(path, target="y"), space=Space(), folds=3)
    with pytest.raises(SweepsError, match=r"t.parquet: cannot be read"):
        load_dataset(spec)


def test_a_parquet_table_with_a_missing_value_is_a_dataframe_imputed_per_fold(tmp_path):
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    with_cell("a", np.nan)(numeric_parquet(path)).to_parquet(path, index=False)
    X, _ = Table(path, target="y")()
    assert not X.attrs and X["a"].isna().sum() == 1 and X["a"].dtype == np.float64


def test_a_parquet_table_with_an_integer_column_keeps_its_types_for_groups(tmp_path):
    # groups= may name an integer column: its values are the groups' names, as from a CSV.
    pytest.importorskip("pyarrow")
    path = tmp_path / "t.parquet"
    numeric_parquet(path).assign(site=lambda f: np.arange(len(f)) % 4).to_parquet(path, index=False)
    X, _ = Table(path, target="y")()
    assert not X.attrs and X["site"].dtype == np.int64
    spec = Study(name="n", task="classification", data=Table(path, target="y"), space=Space(), folds=3, groups="site")
    assert load_dataset(spec).group_names == ("0", "1", "2", "3")


def test_wine_mismatch_demo_is_diagnosed(tmp_path):
    from sweeps.results.diagnose import diagnose_study

    spec = load_study_file(Path(__file__).parents[2] / "studies" / "wine_mismatch.py").replace(
        n_trials=2, max_epochs=20, patience=5)
    dataset = load_dataset(spec)
    assert len(dataset.dev) == 1599 and len(dataset.test) == 4898  # red to sweep, white to test
    url = f"sqlite:///{tmp_path / 'w.db'}"
    run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "w.pt"),
                   err=io.StringIO())
    verdict = diagnose_study(spec, dataset, storage=url).verdict("mismatch")
    assert verdict.status == "yes" and "AUC" in verdict.summary

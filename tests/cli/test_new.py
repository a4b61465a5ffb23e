"""`python -m sweeps.new`: a study file from a table, which `sweeps.run` then runs unchanged."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sweeps.new import main as new_main
from sweeps.run import main as run_main
from sweeps.spec.study import load_study_file

DATA = Path(__file__).parents[2] / "studies" / "data"
ADULT = "age,workclass,fnlwgt,education,education-num,marital-status,occupation,relationship,race,sex," \
        "capital-gain,capital-loss,hours-per-week,native-country,income"


def small_copy(source: Path, target: Path, rows: int, header: bool) -> Path:
    frame = pd.read_csv(source, header=0 if header else None, nrows=rows)
    frame.to_csv(target, index=False, header=header)
    return target


@pytest.mark.parametrize("source, args, task", [
    ("adult-train.csv.gz", ["--target", "income", "--columns", ADULT], "classification"),
    ("california_housing.csv.gz", ["--target", "median_house_value"], "regression"),
])
def test_the_written_study_file_runs_unchanged(tmp_path, monkeypatch, capsys, source, args, task):
    monkeypatch.chdir(tmp_path)
    data = small_copy(DATA / source, tmp_path / source.replace(".gz", ""), 1500, header="--columns" not in args)
    assert new_main([str(data), *args, "--output", "studies/mine.py"]) == 0
    assert "Wrote studies/mine.py" in capsys.readouterr().out
    text = (tmp_path / "studies" / "mine.py").read_text()
    assert f"task={task!r}" in text and "batch_size=64" in text  # 1,500 rows: the small-table budget
    spec = load_study_file(tmp_path / "studies" / "mine.py")
    shutil.copy(tmp_path / "studies" / "mine.py", tmp_path / "studies" / "quick.py")
    quick = tmp_path / "studies" / "quick.py"  # the same file, with a smaller budget for the test
    quick.write_text(text.replace("max_epochs=100", "max_epochs=3").replace("n_trials=25", "n_trials=2"))
    assert run_main([str(quick), "--no-progress"]) == 0
    assert spec.task == task


def test_a_rare_class_gets_class_weights_searched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frame = pd.read_csv(DATA / "mammography.csv.gz", header=None, names=[f"x{i}" for i in range(6)] + ["class"])
    frame.to_csv(tmp_path / "m.csv", index=False)
    assert new_main([str(tmp_path / "m.csv"), "--target", "class"]) == 0
    text = (tmp_path / "studies" / "m.py").read_text()
    assert 'class_weight=Categorical(["none", "balanced"])' in text and "batch_size=256" in text


@pytest.mark.parametrize("args, message", [
    (["--target", "nope"], r"no target column 'nope'; columns are a, b, row"),
    (["--target", "a"], r"column 'row' numbers the rows .* drop it"),
])
def test_what_table_would_refuse_is_one_line(tmp_path, monkeypatch, capsys, args, message):
    import re

    monkeypatch.chdir(tmp_path)
    pd.DataFrame({"a": [0, 1] * 30, "b": [0.5 * (i % 7) for i in range(60)], "row": range(60)}).to_csv(
        tmp_path / "t.csv", index=False)
    assert new_main([str(tmp_path / "t.csv"), *args]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1
    assert not (tmp_path / "studies").exists()


# --- a table is untrusted: its strings never become code -------------------------------------
HOSTILE = [
    '"""\nopen("PWNED", "w").close()\n"""', "'''\nopen('PWNED', 'w').close()\n'''", '"', "'", "\\", "bad\\N{",
    "\\x00", "a\nb", "\x00", "\r", "\u2028", "\ud800", "é", "{}", "#", "x" * 3000,
    '"""; import os; os.system("touch PWNED"); """', "\\u0022\\u0022\\u0022", "\\", "\\\n", "end\\",
]


def hostile_text():
    from hypothesis import strategies as st

    return st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=120))


def generated_namespace(text: str, tmp_path: Path) -> dict:
    """Run a generated file as `load_study_file` would, in a folder where an injected payload would leave a mark."""
    from sweeps.new import check_generated

    check_generated(text)
    path = tmp_path / "generated.py"
    path.write_text(text, encoding="utf-8")
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
        load_study_file(path)
    finally:
        os.chdir(cwd)
    assert not (tmp_path / "PWNED").exists()
    return namespace


def test_hostile_names_from_a_table_stay_strings(tmp_path):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from sweeps.new import study_file

    @settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
    @given(target=hostile_text(), columns=st.lists(hostile_text(), min_size=1, max_size=4, unique=True),
           labels=st.lists(hostile_text(), min_size=2, max_size=3, unique=True),
           file_name=st.text(st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",)),
                             min_size=1, max_size=60),
           with_header=st.booleans())
    def check(target, columns, labels, file_name, with_header):
        facts = {"rows": 1000, "columns": columns, "task": "classification", "numeric": columns[:1],
                 "categorical": columns[1:], "missing": {c: 3 for c in columns[:2]},
                 "classes": {label: round(1 / len(labels), 4) for label in labels}, "rare": False,
                 "column_info": {c: ("object", "categorical: one-hot, 2 levels", 0.25) for c in columns},
                 "warnings": [f"column {c!r} has one value: it carries nothing" for c in columns] + labels}
        text = study_file(tmp_path / "data" / file_name, tmp_path / "studies" / "s.py", "s", target,
                          None if with_header else columns, columns[2:3], facts)
        namespace = generated_namespace(text, tmp_path)
        assert namespace["TARGET"] == target and namespace["study"].data.target == target
        assert list(namespace["CLASSES"]) == labels and namespace["NUMERIC"] + namespace["CATEGORICAL"] == columns
        assert list(namespace["study"].data.drop) == columns[2:3]
        assert Path(namespace["study"].data.path).name == file_name
        if not with_header:
            assert namespace["COLUMNS"] == columns
        assert namespace["COLUMN_INFO"] == facts["column_info"] and namespace["WARNINGS"] == facts["warnings"]
        expected = {"__builtins__", "__doc__", "Space", "Study", "Table", "TARGET", "NUMERIC", "CATEGORICAL", "MISSING",
                    "CLASSES", "COLUMN_INFO", "WARNINGS", "study", *(() if with_header else ("COLUMNS",))}
        assert set(namespace) == expected

    check()


def test_the_checker_refuses_anything_but_a_declaration():
    from sweeps.new import check_generated

    good = 'from sweeps import Space, Study, Table\nX = ["a", 1, -2.0]\nstudy = Study(name="s", data=Table("t", target=X[0]))\n'
    with pytest.raises(ValueError, match="Subscript"):
        check_generated(good)  # a subscript: not a literal
    for bad in ['import os\n', 'from sweeps import Study\nStudy.x = 1\n', 'x = open("f")\n',
                'from sweeps import Study\nx = Study(**{"a": 1})\n', 'x = (lambda: 1)()\n', 'x = y\n',
                'from sweeps import Study as S\n', 'from sweeps.run import main\n', '"""doc"""\nx = 1\n"""x"""\n']:
        with pytest.raises(ValueError):
            check_generated(bad)
    check_generated('"""doc"""\nfrom sweeps import Space, Study, Table\nX = {"a": (1, None)}\n'
                    'study = Study(name="s", data=Table("t", target="y"), space=Space(depth=(1, 2)))\n')


def test_a_hostile_csv_gives_a_study_file_that_runs_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    payload = '"""\nopen("PWNED", "w").close()\n"""'
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({payload: rng.normal(size=60), "bad\\N{": rng.normal(size=60),
                          "q'\"": rng.choice(["a", "b"], 60), "lab\"\"\"el": rng.choice([payload, "x\\"], 60)})
    frame.to_csv(tmp_path / 'we"""ird.csv', index=False)
    assert new_main([str(tmp_path / 'we"""ird.csv'), "--target", 'lab"""el', "--output", "studies/h.py"]) == 0
    spec = load_study_file(tmp_path / "studies" / "h.py")
    assert not (tmp_path / "PWNED").exists()
    X, y = spec.data()
    assert list(X.columns) == [payload, "bad\\N{", "q'\""] and set(y) == {payload, "x\\"}


def test_the_table_is_inspected_before_the_file_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    a, b = rng.normal(50, 10, 400).round(2), rng.normal(20, 5, 400).round(2)
    frame = pd.DataFrame({"a": a, "b": b, "noise": rng.normal(size=400), "const": 1,
                          "store": rng.choice([101, 205, 317, 422, 530, 999], 400), "city": rng.choice(["x", "y"], 400),
                          "count": rng.integers(0, 5, 400), "total": a + b})
    frame.to_csv(tmp_path / "sales.csv", index=False)
    assert new_main([str(tmp_path / "sales.csv"), "--target", "total", "--output", "s.py"]) == 0
    err = capsys.readouterr().err
    assert "columns 'a', 'b' reproduce the target exactly on every row (target = 1·'a' + 1·'b')" in err
    assert "column 'const' has one value" in err and "column 'store' holds 6 whole numbers" in err
    assert "'noise'" not in err and "'count'" not in err and "'city'" not in err  # nothing said of sound columns
    text = (tmp_path / "s.py").read_text()
    for name in frame.columns.drop("total"):  # one line per column: its type, its treatment, its missing share
        assert sum(line.startswith(f"    {name!r}: (") for line in text.splitlines()) == 1
    assert "    'city': ('" in text and "categorical: one-hot, 2 levels" in text
    namespace: dict = {}
    exec(compile(text, "s.py", "exec"), namespace)  # what the warnings say stays in the file, as literals
    assert len(namespace["WARNINGS"]) == 3 and namespace["COLUMN_INFO"]["store"][1] == "numeric: scaled per fold"
    # a classification leak: one column that gives the class on its own
    frame = pd.DataFrame({"x": rng.normal(size=300), "grade": rng.choice(["a", "b", "c"], 300)})
    frame["passed"] = np.where(frame["grade"] == "c", "no", "yes")
    frame.to_csv(tmp_path / "exam.csv", index=False)
    assert new_main([str(tmp_path / "exam.csv"), "--target", "passed", "--output", "e.py"]) == 0
    err = capsys.readouterr().err
    assert "column 'grade' gives the class almost always on its own (100.00% of the rows)" in err and "'x'" not in err


def test_codes_are_read_as_categories_when_the_table_says_so(tmp_path):
    from sweeps import Table
    from sweeps.data.dataset import column_schema

    frame = pd.DataFrame({"store": [101.0, 205.0, np.nan, 101.0], "sales": [1.0, 2.0, 3.0, 4.0], "y": [0, 1, 0, 1]})
    frame.to_csv(tmp_path / "t.csv", index=False)
    X, _ = Table(tmp_path / "t.csv", target="y", categorical=["store"])()
    assert column_schema(X)[1] == ("categorical", "numeric")
    assert X["store"].tolist()[:2] == ["101", "205"] and pd.isna(X["store"][2])  # 101.0 is the label '101'
    with pytest.raises(Exception, match=r"categorical names unknown column\(s\) \['shop'\]"):
        Table(tmp_path / "t.csv", target="y", categorical=["shop"])()

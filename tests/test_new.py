"""`python -m sweeps.new`: a study file from a table, which `sweeps.run` then runs unchanged."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from sweeps.new import main as new_main
from sweeps.run import main as run_main
from sweeps.study import load_study_file

DATA = Path(__file__).parent.parent / "studies" / "data"
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

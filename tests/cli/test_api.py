"""sweeps from a notebook or a script: optimize -> export -> evaluate -> diagnose, no command line."""

from __future__ import annotations

import io

import numpy as np
import optuna
import pytest
from sklearn.datasets import load_digits

import sweeps
from sweeps import Space, Study, SweepsError


def test_a_notebook_style_script_runs_the_whole_path(tmp_path):
    url = f"sqlite:///{tmp_path / 'nb.db'}"
    study = Study(name="notebook", task="classification", data=lambda: load_digits(return_X_y=True),
                  space=Space(depth=1, width=(16, 32), lr=(1e-3, 1e-2)), folds=3, max_epochs=6, patience=3,
                  n_trials=3)
    found = sweeps.optimize(study, storage=url, progress=False, out=io.StringIO())
    assert isinstance(found, optuna.Study) and len(found.trials) == 3
    document = sweeps.api.export(study, storage=url, rule="one-se", output=tmp_path / "best.yaml", format="yaml")
    assert document["rule"] == "one-se" and (tmp_path / "best.yaml").exists()
    result, model = sweeps.api.evaluate(study, storage=url, config=tmp_path / "best.yaml",
                                    output=tmp_path / "model.pt", out=io.StringIO())
    X, y = load_digits(return_X_y=True)
    assert result["metric"] > 0.8 and result["final_model"] == "folds"
    assert model.score(X, y) > 0.8
    np.testing.assert_array_equal(sweeps.load_model(tmp_path / "model.pt").predict(X[:20]), model.predict(X[:20]))
    diagnosis = sweeps.api.diagnose(study, storage=url, output=tmp_path / "d.md", out=io.StringIO())
    assert {v.problem for v in diagnosis.verdicts} == {"model bias", "optimization", "overfitting", "mismatch"}
    pytest.importorskip("onnxruntime")
    graph = sweeps.api.export_onnx(study, storage=url, model_file=tmp_path / "model.pt", output=tmp_path / "m.onnx")
    assert graph == tmp_path / "m.onnx" and graph.stat().st_size > 0  # checked against load_model inside


def test_the_held_out_rows_are_the_ones_evaluate_scores_and_reading_them_uses_nothing(tmp_path, monkeypatch):
    from sweeps.data.dataset import load_dataset
    from sweeps.export import main as export_main

    study = Study(name="rows", task="classification", data=lambda: load_digits(return_X_y=True), seed=3)
    rows = sweeps.api.held_out_rows(study)
    X, y = load_digits(return_X_y=True)
    dataset = load_dataset(study)
    assert rows.tolist() == sorted(rows.tolist()) and len(rows) == len(dataset.test) and abs(len(rows) - 0.2 * len(y)) <= 1
    np.testing.assert_array_equal(X[rows].astype(np.float32), dataset.rows(dataset.test))  # the same rows
    # a separate test set: all of its rows, by their position in it
    separate = study.replace(data=lambda: (X[:1000], y[:1000]), test_data=lambda: (X[1000:1100], y[1000:1100]))
    assert sweeps.api.held_out_rows(separate).tolist() == list(range(100))
    monkeypatch.chdir(tmp_path)  # the command: a CSV, no sweep needed, no storage touched but the file
    study_file = tmp_path / "s.py"
    study_file.write_text("from sklearn.datasets import load_digits\nfrom sweeps import Study\n"
                          "study = Study(name='rows', task='classification', seed=3, "
                          "data=lambda: load_digits(return_X_y=True))\n")
    assert export_main([str(study_file), "--held-out-rows"]) == 0
    written = (tmp_path / "storage" / "rows-held-out-rows.csv").read_text().split()
    assert written[0] == "data_row" and [int(r) for r in written[1:]] == rows.tolist()
    assert not (tmp_path / "storage" / "rows.db").exists()


def test_a_message_names_options_as_its_reader_writes_them(tmp_path, capsys):
    from sweeps.run import main as run_main
    from sweeps.sweep.optimize import RunOptions

    with pytest.raises(SweepsError, match=r"^n_trials must be >= 1, got 0"):  # from Python: the argument's name
        RunOptions(n_trials=0)
    with pytest.raises(SweepsError, match=r"^n_trials must be >= 1"):
        sweeps.optimize(Study(name="x", task="classification", data=lambda: load_digits(return_X_y=True)),
                        n_trials=0)
    study_file = tmp_path / "s.py"
    study_file.write_text("from sklearn.datasets import load_digits\nfrom sweeps import Study\n"
                          "study = Study(name='x', task='classification', data=lambda: load_digits(return_X_y=True))\n")
    assert run_main([str(study_file), "--n-trials", "0"]) == 2  # from the command line: the flag
    assert "error: --n-trials must be >= 1, got 0" in capsys.readouterr().err


def test_python_errors_are_the_command_lines_one_line(tmp_path):
    with pytest.raises(SweepsError, match="no such study file"):
        sweeps.optimize(tmp_path / "missing.py")
    study = Study(name="x", task="classification", data=lambda: load_digits(return_X_y=True))
    with pytest.raises(SweepsError, match="workers > 1 and cluster need the study file.s path"):
        sweeps.optimize(study, workers=2)
    with pytest.raises(SweepsError, match="no such study database"):
        sweeps.api.evaluate(study, storage=f"sqlite:///{tmp_path / 'none.db'}")

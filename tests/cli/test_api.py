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


def test_python_errors_are_the_command_lines_one_line(tmp_path):
    with pytest.raises(SweepsError, match="no such study file"):
        sweeps.optimize(tmp_path / "missing.py")
    study = Study(name="x", task="classification", data=lambda: load_digits(return_X_y=True))
    with pytest.raises(SweepsError, match="workers > 1 and --cluster need the study file.s path"):
        sweeps.optimize(study, workers=2)
    with pytest.raises(SweepsError, match="no such study database"):
        sweeps.api.evaluate(study, storage=f"sqlite:///{tmp_path / 'none.db'}")

"""Every shipped study file loads, validates its data, and runs a short sweep."""

from __future__ import annotations

import io
from pathlib import Path

import optuna
import pytest

from sweeps.data import load_dataset
from sweeps.run import run_study
from sweeps.study import load_study_file

STUDIES = sorted((Path(__file__).parent.parent / "studies").glob("*.py"))


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_file_runs(path, tmp_path):
    spec = load_study_file(path).replace(max_epochs=3, n_trials=2)
    url = f"sqlite:///{tmp_path / 'smoke.db'}"
    study = run_study(spec, load_dataset(spec), storage=url, progress=False, out=io.StringIO())
    assert len(study.trials) == 2
    assert optuna.load_study(study_name=spec.name, storage=url).best_trial.user_attrs["fold_val_losses"]


def test_the_shipped_studies_exist():
    assert {p.stem for p in STUDIES} >= {"digits", "diabetes", "breast_cancer"}

"""Every shipped study file loads, validates its data, and runs a short sweep."""

from __future__ import annotations

import io
import re
from pathlib import Path

import optuna
import pytest

from sweeps.data.dataset import load_dataset
from sweeps.sweep.optimize import run_study
from sweeps.spec.study import load_study_file

STUDIES = sorted((Path(__file__).parent.parent / "studies").glob("*.py"))


def quick(path):
    return load_study_file(path).replace(max_epochs=3, n_trials=2)


def source_model(init_from: str, tmp_path) -> str:
    """The model a transfer study starts from, made by a quick run of its source study."""
    from sweeps.results.evaluate import evaluate_study

    name = Path(init_from).name.removesuffix("-model.pt")  # storage/wine_red-model.pt -> wine_red
    spec = quick(STUDIES[0].parent / f"{name}.py")
    dataset = load_dataset(spec)
    url = f"sqlite:///{tmp_path / 'source.db'}"
    run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "source.pt"),
                   err=io.StringIO())
    return str(tmp_path / "source.pt")


@pytest.mark.parametrize("path", STUDIES, ids=[p.stem for p in STUDIES])
def test_study_file_runs(path, tmp_path):
    spec = quick(path)
    if spec.init_from:
        spec = spec.replace(init_from=source_model(spec.init_from, tmp_path))
    url = f"sqlite:///{tmp_path / 'smoke.db'}"
    study = run_study(spec, load_dataset(spec), storage=url, progress=False, out=io.StringIO())
    assert len(study.trials) == 2
    assert optuna.load_study(study_name=spec.name, storage=url).best_trial.user_attrs["fold_val_losses"]


def test_the_shipped_studies_exist():
    assert {p.stem for p in STUDIES} >= {"digits", "diabetes", "breast_cancer"}


def test_a_study_file_written_for_0_2_runs_unchanged(tmp_path, monkeypatch, capsys):
    from sweeps.evaluate import main as evaluate_main
    from sweeps.run import main as run_main

    monkeypatch.chdir(tmp_path)
    path = Path(__file__).parent / "study_files" / "written_for_0_2.py"
    assert run_main([str(path), "--no-progress", "--until-converged"]) == 0  # a 0.2 flag, still taken
    captured = capsys.readouterr()
    assert re.search(r"Study 'written-for-0.2': \d complete, \d pruned, 0 failed", captured.out)
    assert "--until-converged is now --stop converged" in captured.err
    assert evaluate_main([str(path)]) == 0
    assert "Held-out test set of 'written-for-0.2'" in capsys.readouterr().out

"""--follow end to end, on real data and real SQLite files: each kind of study ends where the
methodology says, every round is a study file that runs alone, and no round reads the
held-out rows."""

from __future__ import annotations

import io
import math
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import optuna
import optuna.artifacts
import pytest
from optuna_dashboard import get_note

import sweeps
import sweeps.follow.loop
from sweeps import run
from sweeps.data.dataset import load_dataset
from sweeps.follow.loop import follow_study
from sweeps.spec.study import load_study_file
from sweeps.sweep.optimize import RunOptions

from conftest import DATA

DIGITS = '''"""Digits, {what}."""
from sklearn.datasets import load_digits

from sweeps import Space, Study

study = Study(name="{name}", task="classification", data=lambda: load_digits(return_X_y=True),
              space=Space({space}),
              folds=5, max_epochs=15, patience=4, n_trials=5, seed=0)
'''


def digits_file(folder: Path, name: str, space: str, what: str) -> Path:
    path = folder / f"{name}.py"
    path.write_text(DIGITS.format(name=name, space=space, what=what))
    return path


def follow(path: Path, rounds: int):
    return sweeps.optimize(str(path), follow=True, rounds=rounds, progress=False, out=io.StringIO())


def best_honest(name: str) -> list[float]:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///storage/{name.split('-round')[0]}.db")
    return sweeps.follow.loop._honest(study.best_trial)


class Watched(np.ndarray):
    """An array that notes which of its rows are read by indexing (every read of the data after
    loading indexes rows: the folds, the preprocessing, baselines, learning curves)."""

    reads: list[np.ndarray] = []

    def __getitem__(self, index):
        rows = index[0] if isinstance(index, tuple) else index
        Watched.reads.append(np.arange(len(self))[rows].ravel())
        return np.asarray(super().__getitem__(index))


def test_a_space_too_small_is_widened_for_bias_and_no_round_reads_the_held_out_rows(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = digits_file(tmp_path, "tiny", "depth=1, width=(2, 4), dropout=(0.0, 0.2), weight_decay=(1e-6, 1e-3), "
                                         "lr=(1e-3, 3e-2)", "with a space far too small")
    spec = load_study_file(path)
    dataset = load_dataset(spec)
    watched = dataset.__class__(**{**dataset.__dict__, "X": dataset.X.view(Watched), "y": dataset.y.view(Watched)})
    Watched.reads = []
    ended = []
    real_evaluate, real_mismatch = sweeps.follow.loop.evaluate_study, sweeps.follow.loop.mismatch_verdict

    def evaluate(*args, **kwargs):  # the one use of the held-out rows: from here on, reads are allowed
        ended.append(len(Watched.reads))
        return real_evaluate(*args, **kwargs)

    def mismatch(*args, **kwargs):
        assert ended, "mismatch was judged before the final evaluation"
        return real_mismatch(*args, **kwargs)

    monkeypatch.setattr(sweeps.follow.loop, "evaluate_study", evaluate)
    monkeypatch.setattr(sweeps.follow.loop, "mismatch_verdict", mismatch)
    result = follow_study(spec, watched, RunOptions(progress=False), study_file=str(path), rounds=2,
                          out=io.StringIO(), err=io.StringIO())

    # no round read a held-out row; the rounds did read the data (the spy sees reads)
    assert ended == [ended[0]] and ended[0] > 0
    before = np.concatenate(Watched.reads[:ended[0]])
    assert not np.isin(before, dataset.test).any()
    assert np.isin(dataset.dev, before).all()

    # bias, named first and acted on; the round is better than the first study by > 2 standard errors
    assert [r.problem for r in result.rounds] == [None, "model bias"]
    assert result.winner is result.rounds[1] and result.winner.kept
    assert "| 2 | tiny-round2 (`tiny_round2.py`) | model bias |" in result.report
    ours, theirs = best_honest("tiny-round2"), best_honest("tiny")
    differences = np.asarray(ours) - np.asarray(theirs)
    assert differences.mean() < -2 * differences.std(ddof=1) / math.sqrt(len(differences))
    assert result.test_result["evaluation"] == 1

    # the round's file, beside the first, runs alone (on a storage of its own, and in its parent's)
    round_file = tmp_path / "tiny_round2.py"
    assert result.rounds[1].file == round_file and "model bias" in round_file.read_text()
    assert run.main([str(round_file), "--storage", f"sqlite:///{tmp_path}/alone.db", "--n-trials", "1",
                     "--no-progress"]) == 0
    assert len(optuna.load_study(study_name="tiny-round2", storage=f"sqlite:///{tmp_path}/alone.db").trials) == 1
    assert run.main([str(round_file), "--storage", "sqlite:///storage/tiny.db", "--no-progress"]) == 0

    # the path is on the first study: report file, note, artifact; each round's note says where it came from
    assert (tmp_path / "storage" / "tiny-follow.md").read_text() == result.report
    first = optuna.load_study(study_name="tiny", storage="sqlite:///storage/tiny.db")
    assert first.user_attrs["follow_report"] == result.report
    assert "tiny-follow.md" in {meta.filename for meta in optuna.artifacts.get_all_artifact_meta(first)}
    assert "## --follow of study 'tiny'" in get_note(first)
    plots = [k for k in first._storage.get_study_system_attrs(first._study_id) if "sweeps-follow" in k]
    assert plots
    derived = optuna.load_study(study_name="tiny-round2", storage="sqlite:///storage/tiny.db")
    assert derived.user_attrs["follow"]["parent"] == "tiny" and derived.user_attrs["follow"]["kept"]
    assert "Round 2 of --follow, derived from study 'tiny'" in get_note(derived)
    with sqlite3.connect(tmp_path / "storage" / "tiny.db") as db:  # one storage holds every round
        names = {n for (n,) in db.execute("SELECT study_name FROM studies")}
    assert {"tiny", "tiny-round2"} <= names


def test_a_learning_rate_far_too_high_is_diagnosed_as_optimization_and_moved_down(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = digits_file(tmp_path, "hot", "depth=(1, 3), width=(32, 128), dropout=(0.0, 0.2), "
                                        "weight_decay=(1e-6, 1e-3), lr=(0.1, 1.0)", "with a learning rate far too high")
    result = follow(path, rounds=2)
    assert [r.problem for r in result.rounds] == [None, "optimization"]
    assert "lr (0.1, 1.0) ->" in result.rounds[1].change
    assert load_study_file(tmp_path / "hot_round2.py").space.lr.high < 1.0
    assert result.winner is result.rounds[1]
    assert result.rounds[1].diff < -result.rounds[1].diff_se


def test_a_healthy_study_stops_after_one_round(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = digits_file(tmp_path, "healthy", "depth=(1, 3), width=(32, 256), dropout=(0.0, 0.3), "
                                            "weight_decay=(1e-6, 1e-2), lr=(1e-3, 1e-2)", "a healthy study")
    result = follow(path, rounds=3)
    assert len(result.rounds) == 1 and result.stop_reason.startswith("nothing limits it")
    assert not list(tmp_path.glob("healthy_round*.py"))
    assert result.test_result["evaluation"] == 1 and "nothing limits it" in result.report


def test_a_shifted_study_proposes_the_mismatch_remedies_and_names_what_to_supply(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    for colour in ("red", "white"):
        shutil.copy(DATA / f"winequality-{colour}.csv.gz", tmp_path / "data")
    shipped = (Path(__file__).parents[2] / "studies" / "wine_mismatch.py").read_text()
    path = tmp_path / "shift.py"
    path.write_text(shipped.replace("n_trials=20", "n_trials=4").replace("max_epochs=100", "max_epochs=15")
                    .replace("patience=10", "patience=4").replace("seed=0,", 'seed=0, final_model="folds",'))
    result = follow(path, rounds=1)
    assert result.mismatch.status == "yes"
    for needed in ("Study(target_data=...)", "Study(groups=...)", "What to supply", "ran none of these"):
        assert needed in result.report
    assert len(result.rounds) == 1 and not list(tmp_path.glob("shift_round*.py"))  # nothing it cannot run
    assert result.test_result["evaluation"] == 1


def test_rounds_without_follow_and_follow_with_workers_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = digits_file(tmp_path, "refused", "depth=1, width=(8, 16)", "refused")
    assert run.main([str(path), "--rounds", "2"]) != 0
    assert "--rounds N counts the rounds of --follow" in capsys.readouterr().err
    with pytest.raises(sweeps.SweepsError, match="drop --workers"):
        follow_study(load_study_file(path), load_dataset(load_study_file(path)), RunOptions(workers=2),
                     study_file=str(path))
    # a folder that cannot take the rounds' files is said before the first sweep, not after it
    (tmp_path / "refused_round0.partial").mkdir()  # what a read-only folder does to a write (even as root)
    assert run.main([str(path), "--follow", "--no-progress"]) != 0
    assert "--follow writes each round as a study file beside refused.py" in capsys.readouterr().err
    assert not (tmp_path / "storage" / "refused.db").exists()

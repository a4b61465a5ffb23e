"""`python -m sweeps.run`: bad input gets one line and exit code 2; Ctrl+C keeps trials."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sweeps import SweepsError
from sweeps.run import main

from conftest import default_signals

GOOD = """
from sklearn.datasets import load_digits
from sweeps import Study, Space
import numpy as np
X, y = load_digits(return_X_y=True)
{setup}
study = Study(name="cli", task="classification", data=lambda: (X, y),
              space=Space(depth=1, width=(16, 32), lr=(1e-3, 1e-2)),
              folds={folds}, max_epochs={max_epochs}, patience=3, n_trials=2)
"""


def study_file(tmp_path: Path, setup: str = "", folds: int = 3, max_epochs: int = 4) -> str:
    path = tmp_path / "study.py"
    path.write_text(GOOD.format(setup=textwrap.dedent(setup), folds=folds, max_epochs=max_epochs))
    return str(path)


def test_runs_and_summarises(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main([study_file(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "Best trial #" in out and "optuna-dashboard sqlite:///storage/cli.db" in out
    assert len(optuna.load_study(study_name="cli", storage="sqlite:///storage/cli.db").trials) == 2


@pytest.mark.parametrize("setup, folds, argv, message", [
    ("X[3, 5] = np.nan", 3, [], r"X has 1 NaN or infinite value\(s\), first at row 3, column 5"),
    ("y = np.zeros_like(y)", 3, [], r"single class"),
    ("y = y[:100]", 3, [], r"X has 1797 rows but y has 100"),
    ("X = X.astype(str); X[0, 0] = 'n/a'", 3, [], r"non-numeric values \('n/a' at row 0, column 0\)"),
    ("", 1, [], r"Study.folds: must be an integer >= 2"),
    ("keep = (y != 9) | (np.cumsum(y == 9) <= 3); X, y = X[keep], y[keep]", 3, [], r"class 9 has 2 rows"),
    ("", 3, ["--n-trials", "0"], r"--n-trials must be >= 1"),
    ("", 3, ["--batch", "0"], r"--batch must be between 1 and 64, got 0"),
    ("", 3, ["--workers", "100000"], r"--workers must be between 1 and 4 x this machine's"),
    ("", 3, ["--storage", "postgresql://nobody@127.0.0.1:1/x"], r"cannot open storage"),
    ("raise RuntimeError('no data here')", 3, [], r"study.py:6: RuntimeError: no data here"),
    ("X, y = X[:0], y[:0]", 3, [], r"data: X has no rows"),
    ("X = X.astype(float); X[2, 7] = 1e39", 3, [], r"1 value\(s\) too large for float32 .* at row 2, column 7"),
])
def test_bad_input_is_one_line_exit_2_and_nothing_written(tmp_path, monkeypatch, capsys, setup, folds,
                                                          argv, message):
    import re

    monkeypatch.chdir(tmp_path)
    code = main([study_file(tmp_path, setup, folds), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2
    assert re.search(message, err), err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "storage").exists()  # no half-written study


def test_missing_study_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["nope.py"]) == 2
    assert "nope.py: no such study file" in capsys.readouterr().err


def test_ctrl_c_keeps_finished_trials_and_rerun_resumes(tmp_path):
    path = study_file(tmp_path, max_epochs=40)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "sweeps.run", path, "--no-progress", "--n-trials", "50"]
    process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, preexec_fn=default_signals)
    db = tmp_path / "storage" / "cli.db"
    url = f"sqlite:///{db}"
    deadline = time.time() + 120
    finished = 0
    while time.time() < deadline and finished < 2:
        time.sleep(0.5)
        if db.exists():
            try:
                study = optuna.load_study(study_name="cli", storage=url)
                finished = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
            except Exception:
                pass
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 130, err
    assert "interrupted; every finished trial is kept" in err and "Traceback" not in err
    study = optuna.load_study(study_name="cli", storage=url)
    kept = len(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)))
    assert kept >= 2
    assert not study.get_trials(states=(TrialState.RUNNING,))  # the interrupted trial is closed
    rerun = subprocess.run([sys.executable, "-m", "sweeps.run", path, "--no-progress", "--n-trials", "1"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0 and f"{kept} finished trials kept" in rerun.stdout


@pytest.mark.parametrize("argv", [["--timeout", "nan"], ["--timeout", "inf"], ["--timeout", "-5"]])
def test_bad_flags_exit_2_without_a_traceback(tmp_path, monkeypatch, capsys, argv):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main([study_file(tmp_path), *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "must be a positive, finite number of seconds" in err and "Traceback" not in err
    assert not (tmp_path / "storage").exists()


def test_diagnose_refuses_a_threshold_that_is_not_a_finite_number():
    from sweeps.results.diagnose import Thresholds

    for bad in ("overfit_gap=nan", "overfit_gap=inf", "top_trials=0", "bias_margin=-1"):
        with pytest.raises(SweepsError, match="must be a finite number"):
            Thresholds().with_settings([bad])


def test_a_fresh_run_prints_no_warning(tmp_path):
    env = {**os.environ, "PYTHONWARNINGS": "default"}  # show every warning, even those Python hides
    result = subprocess.run([sys.executable, "-m", "sweeps.run", study_file(tmp_path), "--no-progress"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    # The storage was closed on the way out: the database is whole in its file (no SQLite WAL
    # left beside it), so copying storage/<name>.db copies every trial.
    assert list((tmp_path / "storage").glob("*.db")) and not list((tmp_path / "storage").glob("*.db-wal"))
    # evaluate stores the model as an artifact: the study it held is let go too (optuna.artifacts,
    # imported inside a function, kept that frame, and so the study, to the end)
    result = subprocess.run([sys.executable, "-m", "sweeps.evaluate", study_file(tmp_path)],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    assert not list((tmp_path / "storage").glob("*.db-wal"))


def test_output_into_a_closed_pipe_ends_quietly(tmp_path):
    """`python -m sweeps.cache | head -0`: the reader leaves before the output is written."""
    process = subprocess.Popen([sys.executable, "-m", "sweeps.cache"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, env={**os.environ, "SWEEPS_CACHE_DIR": str(tmp_path)})
    process.stdout.close()
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141 and err == "", err


@pytest.mark.parametrize("verb", ["run", "export", "evaluate", "diagnose", "dashboard", "new", "cache"])
def test_help_and_a_wrong_flag_answer_without_loading_the_work(verb):
    # --help and an argument error are read before torch, scikit-learn, pandas or optuna load
    # (seconds): the answer is immediate, whatever the machine.
    probe = textwrap.dedent(f"""
        import sys
        from sweeps.{verb} import main
        for argv in (["--help"], ["study.py", "--no-such-flag"]):
            try:
                main(argv)
            except SystemExit as e:
                assert e.code == (0 if argv == ["--help"] else 2), e.code
        print(sorted(m for m in ("torch", "sklearn", "pandas", "optuna", "scipy") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"

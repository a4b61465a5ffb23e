"""Storage: many processes opening one new database at once (workers, machines, a dashboard)."""

from __future__ import annotations

import multiprocessing

from racer import open_new_database


def test_processes_racing_to_create_a_new_database_all_succeed(tmp_path):
    # Without the retry in open_storage, 14 of 36 such opens failed here on
    # "UNIQUE constraint failed: alembic_version.version_num".
    # A fork server that imported sweeps once: the processes start in milliseconds, not
    # seconds of imports each, and without the test process's threads.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["racer", "sweeps.store.storage"])
    failures = []
    for round_ in range(3):
        url = f"sqlite:///{tmp_path / f'race{round_}.db'}"
        results, start = context.Queue(), context.Barrier(6)
        processes = [context.Process(target=open_new_database, args=(url, results, start)) for _ in range(6)]
        for p in processes:
            p.start()
        for p in processes:
            p.join(timeout=120)
        failures += [r for r in (results.get(timeout=10) for _ in processes) if r != "ok"]
    assert not failures, failures[0]


# --- one line for every storage failure, and nothing written ---------------------------------
import io  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402

import optuna  # noqa: E402
import pytest  # noqa: E402
from optuna.trial import TrialState  # noqa: E402

from sweeps import SweepsError  # noqa: E402
from sweeps.data.dataset import load_dataset  # noqa: E402
from sweeps.run import main as run_main
from sweeps.sweep.optimize import run_study  # noqa: E402
from sweeps.store.storage import database_path, open_storage  # noqa: E402

from conftest import digits_study  # noqa: E402

STUDY_FILE = """
from sklearn.datasets import load_digits
from sweeps import Study, Space
study = Study(name="s", task="classification", data=lambda: load_digits(return_X_y=True),
              space=Space(depth=1, width=(16, 32), lr=(1e-3, 1e-2)), folds=3, max_epochs=3, n_trials={n})
"""


def study_file(tmp_path, n_trials=2):
    path = tmp_path / "s.py"
    path.write_text(STUDY_FILE.format(n=n_trials))
    return str(path)


def one_line_exit_2(capsys, code, pattern):
    import re

    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert re.search(pattern, err), err
    return err


def test_the_default_database_is_named_by_the_study_and_nothing_else():
    assert database_path("digits-v2.1") == database_path("digits-v2.1")
    assert str(database_path("digits-v2.1")) == os.path.join("storage", "digits-v2.1.db")
    with pytest.raises(SweepsError, match="may hold only letters"):
        database_path("../x")


def test_a_garbage_database_file_is_one_line_and_stays_as_it_was(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "storage" / "s.db"
    db.parent.mkdir()
    db.write_bytes(b"this is not a database" * 100)
    before = db.read_bytes()
    one_line_exit_2(capsys, run_main([study_file(tmp_path), "--no-progress"]), r"the database file is damaged")
    assert db.read_bytes() == before


def test_a_page_corrupted_database_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_main([study_file(tmp_path, n_trials=3), "--no-progress"]) == 0
    capsys.readouterr()
    db = tmp_path / "storage" / "s.db"
    import sqlite3

    with sqlite3.connect(db) as connection:  # the page holding the trial_values table's b-tree
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
        root = connection.execute("SELECT rootpage FROM sqlite_master WHERE name = 'trial_values'").fetchone()[0]
        page = connection.execute("PRAGMA page_size").fetchone()[0]
    connection.close()
    data = bytearray(db.read_bytes())
    data[(root - 1) * page: (root - 1) * page + 8] = b"\xff" * 8  # a damaged page header, file otherwise fine
    db.write_bytes(bytes(data))
    before = db.read_bytes()
    one_line_exit_2(capsys, run_main([study_file(tmp_path, n_trials=5), "--no-progress"]),
                    r"the database file is damaged .*restore a backup")
    assert db.read_bytes() == before


@pytest.fixture
def tiny_disk(tmp_path, request):
    """A 1.2 MB tmpfs (or the size a test marks with `disk_size`): a disk that fills up after a few
    trials (needs mount permission)."""
    marker = request.node.get_closest_marker("disk_size")
    mount = tmp_path / "tiny"
    mount.mkdir()
    size = marker.args[0] if marker else "1200k"
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        if os.environ.get("CI"):
            pytest.fail(f"cannot mount a tmpfs in CI: {made.stderr.decode().strip()}")
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)  # lazily: a pooled connection may be open


def test_a_full_disk_is_one_line_and_finished_trials_are_kept(tmp_path, tiny_disk, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPS_CANDIDATES_DIR", str(tmp_path / "candidates"))  # the database alone fills it
    url = f"sqlite:///{tiny_disk / 's.db'}"
    code = run_main([study_file(tmp_path, n_trials=500), "--no-progress", "--storage", url])
    one_line_exit_2(capsys, code, r"the disk is full \(database or disk is full\); free some space")
    trials = optuna.load_study(study_name="s", storage=url).trials  # still readable
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert complete and all(t.user_attrs.get("fold_val_losses") for t in complete)


@pytest.mark.disk_size("1800k")  # the folds' preprocessing (1.45 MB, once) and ~4 digits candidates (~90 KB each) fit, not the 20 kept
def test_a_full_disk_under_the_candidates_alone_stops_the_sweep_in_one_line(tmp_path, tiny_disk, monkeypatch,
                                                                             capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SWEEPS_CANDIDATES_DIR", str(tiny_disk))
    url = f"sqlite:///{tmp_path / 's.db'}"
    code = run_main([study_file(tmp_path, n_trials=500), "--no-progress", "--storage", url])
    one_line_exit_2(capsys, code, r"tiny/s: the disk is full \(No space left on device\); free some space, "
                                  r"or set SWEEPS_CANDIDATES_DIR")
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert [t for t in trials if t.state == TrialState.COMPLETE]  # those before the disk filled are kept
    assert not list(tiny_disk.rglob("*.partial"))  # no half-written file


def test_a_candidates_folder_that_cannot_be_made_is_one_warning_and_the_sweep_finishes(tmp_path, monkeypatch,
                                                                                      capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("SWEEPS_CANDIDATES_DIR", str(tmp_path / "a-file"))  # a folder under a file: ENOTDIR
    url = f"sqlite:///{tmp_path / 's.db'}"
    assert run_main([study_file(tmp_path, n_trials=3), "--no-progress", "--storage", url]) == 0
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be kept in" in err and "keeps no more candidates" in err, err
    trials = optuna.load_study(study_name="s", storage=url).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


# --- a study that sweeps did not write is left alone ---------------------------------------------
@pytest.mark.parametrize("make", [
    lambda url: optuna.create_study(study_name="s", storage=url, direction="maximize"),
    lambda url: optuna.create_study(study_name="s", storage=url, directions=["minimize", "minimize"]),
    lambda url: optuna.create_study(study_name="s", storage=url).optimize(
        lambda t: t.suggest_float("x", 0, 1), n_trials=2),
])
def test_a_foreign_study_of_the_same_name_is_refused_and_left_alone(tmp_path, monkeypatch, capsys, make):
    from sweeps.evaluate import main as evaluate_main
    from sweeps.export import main as export_main

    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'storage' / 's.db'}"
    (tmp_path / "storage").mkdir()
    make(url)
    before = optuna.load_study(study_name="s", storage=url)
    snapshot = (before.user_attrs, [(t.number, t.state, t.params) for t in before.trials])
    for main in (run_main, export_main, evaluate_main):
        one_line_exit_2(capsys, main([study_file(tmp_path)]),
                        r"study 's' in sqlite:///.* (was not written by sweeps|has directions)")
    after = optuna.load_study(study_name="s", storage=url)
    assert (after.user_attrs, [(t.number, t.state, t.params) for t in after.trials]) == snapshot
    assert sorted(os.listdir(tmp_path / "storage")) == ["s.db"]  # no export file, no model, no WAL switch


def test_an_empty_study_made_with_optuna_to_enqueue_trials_is_adopted(sqlite_url):
    spec = digits_study(n_trials=2)
    optuna.create_study(study_name=spec.name, storage=sqlite_url).enqueue_trial({"lr": 5e-3})
    run_study(spec, load_dataset(spec), storage=sqlite_url, progress=False, out=io.StringIO())
    study = optuna.load_study(study_name=spec.name, storage=sqlite_url)
    assert study.trials[0].params["lr"] == 5e-3 and "sweeps_version" in study.user_attrs


def test_storage_errors_name_their_cause(tmp_path):
    import sqlite3

    from sweeps.store.storage import explain

    cases = {"database or disk is full": "the disk is full", "attempt to write a readonly database":
             "cannot be written", "database is locked": "stayed locked", "disk I/O error": "written to disk",
             "file is not a database": "damaged"}
    for reason, cause in cases.items():
        assert cause in explain(sqlite3.OperationalError(reason), "sqlite:///x.db")
    wrapped = optuna.exceptions.StorageInternalError("commit failed")
    wrapped.__cause__ = sqlite3.OperationalError("database or disk is full")
    assert "the disk is full" in explain(wrapped, "sqlite:///x.db")
    assert explain(ValueError("not storage")) is None
    with pytest.raises(SweepsError, match="no such study database"):
        open_storage(f"sqlite:///{tmp_path / 'none.db'}", create=False)


def test_a_heartbeat_that_cannot_be_written_stops_the_sweep_with_one_line(tmp_path, monkeypatch, capsys):
    import sqlite3

    def damaged(self, trial_id):
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(optuna.storages.RDBStorage, "record_heartbeat", damaged)  # runs in Optuna's thread
    code = run_main([study_file(tmp_path), "--no-progress", "--heartbeat-interval", "1"])
    one_line_exit_2(capsys, code, r"the database file is damaged \(database disk image is malformed\)")


def test_trial_notes_are_written_for_the_first_max_trial_notes_trials_only(tmp_path, monkeypatch):
    """optuna-dashboard scans every note of the study for each trial it shows: the notes are capped."""
    from optuna_dashboard import get_note

    from sweeps.store import notes

    monkeypatch.setattr(notes, "MAX_TRIAL_NOTES", 2)
    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 'notes.db'}", create=True))
    for i in range(3):
        trial = study.ask()
        notes.save_trial_note(trial, f"trial {i}'s note")
        study.tell(trial, 1.0)
    shown = [get_note(optuna.trial.Trial(study, t._trial_id)) for t in study.trials]
    assert shown == ["trial 0's note", "trial 1's note", ""]

"""Preprocess once: cached folds equal fresh ones, a changed input misses, nothing half-written is read."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import sweeps.data.cache
from sweeps import Space, SweepsError, Table
from sweeps.cache import main as cache_main
from sweeps.data.cache import cache_dir, cached_folds, entries, folds_key
from sweeps.data.dataset import load_dataset
from sweeps.data.folds import Folds, make_folds

from conftest import ADULT, DATA, digits_study


@pytest.fixture(scope="module")
def adult_dataset(tmp_path_factory):
    """2,000 real adult rows (mixed types, missing values) with groups: every field of Folds is used."""
    frame = pd.read_csv(DATA / "adult-train.csv.gz", header=None, names=ADULT, skipinitialspace=True, nrows=2000)
    path = tmp_path_factory.mktemp("adult") / "adult.csv"
    frame.to_csv(path, index=False)
    spec = digits_study(name="adult-cache", data=Table(path, target="income"), space=Space(depth=1),
                        groups="sex", preprocessing="auto")
    return load_dataset(spec)


def assert_same_folds(a: Folds, b: Folds) -> None:
    for name in ("X_train", "y_train", "train_weight", "X_val", "y_val", "val_weight", "target_std", "val_groups",
                 "train_importance", "target_X"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), name
    assert a.n_outputs == b.n_outputs and a.fold_ids == b.fold_ids and a.n_numeric == b.n_numeric
    assert a.group_names == b.group_names
    assert all(np.array_equal(x, y) for x, y in zip(a.train_rows, b.train_rows))
    assert all(np.array_equal(x, y) for x, y in zip(a.val_rows, b.val_rows))
    assert np.array_equal(a.split_class_counts, b.split_class_counts)
    for p, q in zip(a.preprocessings, b.preprocessings):
        (pm, pa), (qm, qa) = p.state(), q.state()
        assert pm == qm and pa.keys() == qa.keys() and all(np.array_equal(pa[k], qa[k]) for k in pa)


def test_a_hit_equals_a_fresh_preparation_and_prepares_nothing(adult_dataset, monkeypatch):
    first = cached_folds(adult_dataset, 3, 0, scaling="auto")
    assert len(entries(cache_dir())) == 1
    monkeypatch.setattr(sweeps.data.cache, "make_folds", lambda *a, **k: pytest.fail("prepared again on a hit"))
    again = cached_folds(adult_dataset, 3, 0, scaling="auto")
    assert_same_folds(again, make_folds(adult_dataset, 3, 0, scaling="auto"))
    assert_same_folds(again, first)
    assert again.val_groups is not None and len(again.preprocessings) == 3


def test_any_changed_input_is_another_entry(adult_dataset, digits_dataset):
    base = folds_key(adult_dataset, 3, 0, "auto")
    assert len({base, folds_key(adult_dataset, 5, 0, "auto"), folds_key(adult_dataset, 3, 1, "auto"),
                folds_key(adult_dataset, 3, 0, "standard"), folds_key(digits_dataset, 3, 0, "auto")}) == 5
    changed_data = adult_dataset.__class__(**{**adult_dataset.__dict__, "data_hash": "0" * 64})
    changed_split = adult_dataset.__class__(**{**adult_dataset.__dict__, "test_hash": "0" * 64})
    no_groups = adult_dataset.__class__(**{**adult_dataset.__dict__, "groups": None, "group_names": ()})
    assert base not in {folds_key(changed_data, 3, 0, "auto"), folds_key(changed_split, 3, 0, "auto"),
                        folds_key(no_groups, 3, 0, "auto")}


def test_a_changed_data_file_misses(tmp_path):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    frame["y"] = (frame["a"] > 0).astype(int)
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    spec = digits_study(name="t", data=Table(path, target="y"))
    before = cached_folds(load_dataset(spec), 3, 0)
    frame.loc[0, "b"] = 99.0  # one value edited in the file
    frame.to_csv(path, index=False)
    after = cached_folds(load_dataset(spec), 3, 0)
    assert len(entries(cache_dir())) == 2
    assert not torch.equal(before.X_train, after.X_train) or not torch.equal(before.X_val, after.X_val)


def test_a_corrupt_entry_is_prepared_again(digits_dataset):
    fresh = cached_folds(digits_dataset, 3, 0)
    (entry,) = [e for e, _, _ in entries(cache_dir())]
    (entry / "X_train.npy").write_bytes(b"\x93NUMPY broken")
    assert_same_folds(cached_folds(digits_dataset, 3, 0), fresh)
    assert np.load(entry / "X_train.npy").shape == tuple(fresh.X_train.shape)  # written again, whole


class Touches:
    """Unpickling this creates a file: the proof that a pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return Path.touch, (self.path,)


def test_nothing_is_read_that_could_run_code(digits_dataset, tmp_path):
    cached_folds(digits_dataset, 3, 0)
    (entry,) = [e for e, _, _ in entries(cache_dir())]
    marker = tmp_path / "ran"
    np.save(entry / "y_val.npy", np.array([Touches(marker)], dtype=object), allow_pickle=True)
    folds = cached_folds(digits_dataset, 3, 0)  # refused by allow_pickle=False: dropped, prepared again
    assert not marker.exists()
    assert folds.y_val.dtype == torch.int64


def test_off_writes_nothing_and_the_limit_evicts_the_least_recently_used(digits_dataset, monkeypatch, tmp_path):
    monkeypatch.setenv("SWEEPS_CACHE_DIR", "off")
    cached_folds(digits_dataset, 3, 0)
    assert cache_dir() is None
    monkeypatch.setenv("SWEEPS_CACHE_DIR", str(tmp_path / "c"))
    monkeypatch.setenv("SWEEPS_CACHE_GB", "0.0015")  # digits' 3 folds take 1.2 MiB: room for one entry
    cached_folds(digits_dataset, 3, 0)
    cached_folds(digits_dataset, 3, 1)
    kept = entries(tmp_path / "c")
    assert [e.name for e, _, _ in kept] == [folds_key(digits_dataset, 3, 1, "standard")]


def test_the_command_shows_and_clears_the_cache(digits_dataset, capsys):
    cached_folds(digits_dataset, 3, 0)
    shown = subprocess.run([sys.executable, "-m", "sweeps.cache"], capture_output=True, text=True, check=True)
    assert str(cache_dir()) in shown.stdout and "1 entries" in shown.stdout
    assert cache_main(["--clear"]) == 0  # in this process: the command's process is the one above
    assert "Cleared 1 entries" in capsys.readouterr().out and entries(cache_dir()) == []


def test_the_cache_touches_only_its_own_entries(digits_dataset, tmp_path, monkeypatch, capsys):
    root = tmp_path / "shared-folder"
    monkeypatch.setenv("SWEEPS_CACHE_DIR", str(root))
    monkeypatch.setenv("SWEEPS_CACHE_GB", "0")  # evict everything it may
    foreign = [root / "notes", root / ("0" * 32), root / "project"]
    for folder in foreign:  # another tool's folders, one named like a key, with a meta.json each
        folder.mkdir(parents=True)
        (folder / "meta.json").write_text('{"format": 3}')
        (folder / "keep.txt").write_text("mine")
    (root / "link").symlink_to(tmp_path / "nowhere")  # a dangling link
    cached_folds(digits_dataset, 3, 0)
    cached_folds(digits_dataset, 3, 1)
    assert [e.name for e, _, _ in entries(root)] == [folds_key(digits_dataset, 3, 1, "standard")]
    assert cache_main(["--clear"]) == 0
    assert "Cleared 1 entries" in capsys.readouterr().out
    assert all((folder / "keep.txt").read_text() == "mine" for folder in foreign) and (root / "link").is_symlink()


def test_an_altered_entry_is_prepared_again(digits_dataset):
    fresh = cached_folds(digits_dataset, 3, 0)
    (entry,) = [e for e, _, _ in entries(cache_dir())]
    y = np.load(entry / "y_val.npy")
    np.save(entry / "y_val.npy", (y + 1) % 10, allow_pickle=False)  # loadable, well-formed, and wrong
    again = cached_folds(digits_dataset, 3, 0)
    assert torch.equal(again.y_val, fresh.y_val)


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-1", "lots"])
def test_a_bad_size_setting_is_one_line(digits_dataset, monkeypatch, value, tmp_path, capsys):
    monkeypatch.setenv("SWEEPS_CACHE_GB", value)
    with pytest.raises(SweepsError, match=rf"SWEEPS_CACHE_GB must be a number of GiB, at least 0, got '{value}'"):
        cached_folds(digits_dataset, 3, 0)
    assert cache_main([]) == 2  # the command (its process is tested above), in this process
    err = capsys.readouterr().err
    assert "SWEEPS_CACHE_GB" in err and err.count("\n") == 1 and "Traceback" not in err


def test_unfinished_folders_of_stopped_writers_are_shown_counted_and_cleared(digits_dataset, capsys):
    cached_folds(digits_dataset, 3, 0)
    root = cache_dir()
    ended = subprocess.Popen(["true"])
    ended.wait()
    dead = ended.pid  # a pid that has ended
    left = root / f".{'a' * 32}.{dead}.partial"
    writing = root / f".{'b' * 32}.{os.getpid()}.partial"  # this process: still writing
    for folder in (left, writing):
        folder.mkdir()
        (folder / "X_train.npy").write_bytes(b"0" * 2048)
    assert cache_main([]) == 0
    assert "2 unfinished folder(s), 1 of them left by stopped processes" in capsys.readouterr().out
    assert cache_main(["--clear"]) == 0
    assert "and 1 unfinished folder(s)" in capsys.readouterr().out
    assert not left.exists() and writing.exists()

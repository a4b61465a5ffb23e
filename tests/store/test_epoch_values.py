"""A running trial's epochs are held back and written in batches, with its record in one
transaction, and what is stored is what Optuna's own calls store."""

from __future__ import annotations

import math
import sqlite3
import uuid

import optuna
import pytest
import sqlalchemy

from sweeps.store import record
from sweeps.store.storage import open_storage

VALUES = [0.9, 0.7, math.inf, 0.5, math.nan, 0.45]  # a diverging fold's mean can be inf or nan
ATTRS = {"fold_val_losses": [0.4, 0.5], "prune_reason": "pruned at epoch 6", "epochs": 6}


def _study(kind: str, tmp_path, request, monkeypatch=None) -> optuna.Study:
    if kind == "sqlite, row by row":  # as on a database without upserts: Optuna's own row writes
        monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 23, 0))
    url = request.getfixturevalue("postgres") if kind == "postgresql" else f"sqlite:///{tmp_path / 'epochs.db'}"
    return optuna.create_study(study_name=f"epochs-{uuid.uuid4().hex[:8]}", storage=open_storage(url, create=True))


def _commits(study: optuna.Study) -> list[int]:
    """A counter of the transactions committed by the study's storage from now on."""
    count = [0]
    sqlalchemy.event.listen(study._storage._backend.engine, "commit", lambda connection: count.__setitem__(0, count[0] + 1))
    return count


def _stored(study: optuna.Study, number: int) -> optuna.trial.FrozenTrial:
    """The trial as another process reads it (a storage of its own, no cache)."""
    return optuna.load_study(study_name=study.study_name, storage=study._storage._backend.url).trials[number]


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in
                                        ((a[k], b[k]) for k in a))


@pytest.mark.parametrize("kind", ["sqlite", "sqlite, row by row", "postgresql"])
def test_epochs_wait_for_the_record_and_are_stored_as_optunas_own_calls_store_them(kind, tmp_path, request,
                                                                                   monkeypatch):
    study = _study(kind, tmp_path, request, monkeypatch)
    by_optuna, trial = study.ask(), study.ask()
    for epoch, value in enumerate(VALUES, 1):
        by_optuna.report(value, epoch)
    for key, value in ATTRS.items():
        by_optuna.set_user_attr(key, value)
    monkeypatch.setattr(record, "WRITE_EVERY", 3600.0)
    commits = _commits(study)
    epochs = record.EpochValues(trial)
    for epoch, value in enumerate(VALUES, 1):
        epochs.add(epoch, value)
    epochs.add(3, 0.1)  # a step reported twice keeps its first value, as Trial.report does
    assert commits[0] == 0 and _stored(study, trial.number).intermediate_values == {}
    # The trial's pruner reads its in-process copy, which is up to date.
    assert optuna.pruners.ThresholdPruner(upper=0.44).prune(study, trial._get_latest_trial()) is True
    assert optuna.pruners.ThresholdPruner(upper=0.46).prune(study, trial._get_latest_trial()) is False
    epochs.write(ATTRS)
    assert commits[0] == 1  # every epoch and attribute in one transaction
    stored, reference = _stored(study, trial.number), _stored(study, by_optuna.number)
    assert _same(stored.intermediate_values, reference.intermediate_values) and len(VALUES) == 6
    assert stored.user_attrs == reference.user_attrs == ATTRS
    epochs.write({"epochs": 7})  # a key written again is replaced
    assert _stored(study, trial.number).user_attrs["epochs"] == 7 and trial.user_attrs["epochs"] == 7


@pytest.mark.parametrize("kind", ["sqlite", "sqlite, row by row", "postgresql"])
def test_a_trial_finished_elsewhere_refuses_the_whole_write(kind, tmp_path, request, monkeypatch):
    study = _study(kind, tmp_path, request, monkeypatch)
    trial = study.ask()
    epochs = record.EpochValues(trial)
    epochs.add(1, 0.5)
    other = optuna.load_study(study_name=study.study_name, storage=study._storage._backend.url)
    other.tell(trial.number, 0.123)  # the dashboard, say
    with pytest.raises(optuna.exceptions.UpdateFinishedTrialError):
        epochs.write(ATTRS)
    stored = _stored(study, trial.number)
    assert stored.intermediate_values == {} and stored.user_attrs == {} and stored.value == 0.123


def test_epochs_are_written_every_few_seconds_while_the_trial_trains(tmp_path, monkeypatch):
    study = _study("sqlite", tmp_path, None)
    trial = study.ask()
    clock = [100.0]
    monkeypatch.setattr(record.time, "monotonic", lambda: clock[0])
    commits = _commits(study)
    epochs = record.EpochValues(trial)
    for epoch in range(1, 11):
        clock[0] += 0.5  # an epoch every half second: a write every 2 s, at epochs 4 and 8
        epochs.add(epoch, 1.0 / epoch)
    assert commits[0] == 2 and sorted(_stored(study, trial.number).intermediate_values) == list(range(1, 9))


def test_a_storage_that_is_not_a_database_gets_the_same_values():
    study = optuna.create_study()  # in memory
    trial = study.ask()
    epochs = record.EpochValues(trial)
    for epoch, value in enumerate(VALUES, 1):
        epochs.add(epoch, value)
    epochs.write(ATTRS)
    stored = study.trials[trial.number]
    assert _same(stored.intermediate_values, dict(enumerate(VALUES, 1))) and stored.user_attrs == ATTRS

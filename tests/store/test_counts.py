"""Counting a study's trials asks the database, instead of reading every trial back whole."""

from __future__ import annotations

import uuid

import optuna
import pytest
from optuna.trial import TrialState

from sweeps.store.storage import open_storage
from sweeps.sweep.workers import LIVE, NotNeeded, admit, counts


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_trials_are_counted_per_state_by_the_database(kind, tmp_path, monkeypatch, request):
    url = f"sqlite:///{tmp_path / 'counts.db'}" if kind == "sqlite" else request.getfixturevalue("postgres")
    study = optuna.create_study(study_name=f"counts-{uuid.uuid4().hex[:8]}", storage=open_storage(url, create=True))
    other = optuna.create_study(study_name=f"other-{uuid.uuid4().hex[:8]}", storage=study._storage)
    other.enqueue_trial({})  # another study's trials are not counted
    told = [TrialState.COMPLETE] * 3 + [TrialState.PRUNED] * 2 + [TrialState.FAIL]
    for state in told:
        trial = study.ask()
        trial.report(0.5, 0)
        study.tell(trial, 1.0 if state == TrialState.COMPLETE else None, state=state)
    running = study.ask()
    study.enqueue_trial({})
    expected = {state: sum(t.state == state for t in study.get_trials(deepcopy=False)) for state in TrialState}
    assert expected[TrialState.RUNNING] == 1 and expected[TrialState.WAITING] == 1

    def no_reading(*args, **kwargs):
        raise AssertionError("counting read the trials")

    monkeypatch.setattr(study._storage, "get_all_trials", no_reading)
    assert counts(study) == expected
    admit(study, running, target=len(told))  # 5 live trials come before it (the failed one is not live)
    with pytest.raises(NotNeeded):
        admit(study, running, target=5)
    assert sum(expected[s] for s in LIVE) == 7


def test_a_storage_that_is_not_a_database_is_counted_by_reading_its_trials():
    study = optuna.create_study()  # in memory
    study.tell(study.ask(), 1.0)
    study.ask()
    c = counts(study)
    assert c[TrialState.COMPLETE] == 1 and c[TrialState.RUNNING] == 1 and c[TrialState.PRUNED] == 0

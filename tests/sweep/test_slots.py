"""--batch P: continuous batching on real SQLite files. A slot is refilled as soon as its trial
ends; a failure ends the trials it concerns, with their reasons."""

from __future__ import annotations

import io

import optuna
import pytest
from optuna.trial import TrialState
from sklearn.datasets import load_diabetes

from sweeps import Space
from sweeps.data.dataset import load_dataset
from sweeps.engine.stack import Stack
from sweeps.errors import Terminated
from sweeps.sweep import pruners
from sweeps.sweep.optimize import run_study

from conftest import digits_study


def run(spec, url, **kwargs):
    return run_study(spec, load_dataset(spec), storage=url, progress=False, out=io.StringIO(), **kwargs)


def test_a_slot_is_refilled_as_soon_as_its_trial_ends_not_after_the_round(sqlite_url):
    spec = digits_study(name="diabetes-test", task="regression", data=lambda: load_diabetes(return_X_y=True),
                        n_trials=3, max_epochs=6, patience=6,
                        space=Space(depth=2, width=32, dropout=0.0, weight_decay=1e-6, lr=(1e-3, 1e10)))
    study = optuna.create_study(study_name=spec.name, storage=sqlite_url)
    study.enqueue_trial({"lr": 1e10})  # diverges in its first epoch
    study.enqueue_trial({"lr": 1e-2})  # trains 6 epochs
    study.enqueue_trial({"lr": 3e-3})  # asked when the first one ends
    run(spec, sqlite_url, batch=2)
    first, second, third = optuna.load_study(study_name=spec.name, storage=sqlite_url).trials
    assert [t.state for t in (first, second, third)] == [TrialState.PRUNED, TrialState.COMPLETE,
                                                         TrialState.COMPLETE]
    # the third started while the second still trained: it took the first one's slot at once
    assert first.datetime_complete <= third.datetime_start < second.datetime_complete
    assert third.user_attrs["epochs"] == 6 and len(third.intermediate_values) == 6  # its own epochs, from 1


def test_too_little_memory_in_one_stack_fails_its_trials_and_the_others_go_on(sqlite_url, monkeypatch):
    real = Stack.epoch

    def deep_ones_fail(self):
        if self.configs[0].depth == 2 and self.epochs_done == 1:  # after its first epoch's report
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory")
        return real(self)

    monkeypatch.setattr(Stack, "epoch", deep_ones_fail)
    spec = digits_study(n_trials=3, space=Space(depth=(1, 2), width=16, lr=5e-3))
    study = optuna.create_study(study_name=spec.name, storage=sqlite_url)
    for depth in (1, 2, 1, 1):
        study.enqueue_trial({"depth": depth})
    run(spec, sqlite_url, batch=2)
    trials = optuna.load_study(study_name=spec.name, storage=sqlite_url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE,
                                         TrialState.COMPLETE]
    assert trials[1].user_attrs["fail_reason"].startswith("out of memory while training: RuntimeError")
    assert not pruners._running  # no trial's fold losses are kept once it has ended, however it ended


@pytest.mark.parametrize("stop, reason", [(KeyboardInterrupt, "interrupted (Ctrl+C)"),
                                          (Terminated, "terminated (SIGTERM)")])
def test_a_stop_fails_every_trial_in_a_slot_with_why_and_keeps_the_finished(sqlite_url, monkeypatch, stop, reason):
    real, epochs = Stack.epoch, []

    def stopped_later(self):
        epochs.append(1)
        if len(epochs) == 6:  # the second three trials, in their second epoch
            raise stop()
        return real(self)

    monkeypatch.setattr(Stack, "epoch", stopped_later)
    spec = digits_study(n_trials=6, max_epochs=4, patience=4, space=Space(depth=1, width=16, lr=(1e-3, 1e-2)))
    with pytest.raises(stop):
        run(spec, sqlite_url, batch=3)
    trials = optuna.load_study(study_name=spec.name, storage=sqlite_url).trials
    finished = [t for t in trials if t.state == TrialState.COMPLETE]
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(finished) == 3 and len(failed) == 3  # the first slots' trials finished at epoch 4
    assert all(t.user_attrs["fail_reason"].startswith(reason) for t in failed)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    run(spec, sqlite_url, batch=3)  # rerunning resumes: the target is topped up
    trials = optuna.load_study(study_name=spec.name, storage=sqlite_url).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6

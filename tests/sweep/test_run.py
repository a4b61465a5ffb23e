"""The sweep end to end on real SQLite files: what is stored, resume, pruning, divergence."""

from __future__ import annotations

import io
import os
import re
import signal
import time

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from sklearn.datasets import load_diabetes, load_digits

from sweeps import Categorical, Space, Study, SweepsError
from sweeps.errors import Terminated
from sweeps.data.dataset import load_dataset
from sweeps.run import summary
from sweeps.sweep.optimize import run_study
from sweeps.sweep.pruners import AfterStartup

from conftest import digits_study


def run(spec, url, **kwargs):
    return run_study(spec, load_dataset(spec), storage=url, progress=False, out=io.StringIO(), **kwargs)


@pytest.mark.parametrize("batch", [1, 3])
def test_a_sweep_is_stored_and_readable_with_plain_optuna(sqlite_url, digits_dataset, batch):
    spec = digits_study(n_trials=3)
    run(spec, sqlite_url, batch=batch)
    study = optuna.load_study(study_name=spec.name, storage=sqlite_url)  # no sweeps involved
    assert len(study.trials) == 3 and study.metric_names == ["cv_loss"]
    assert study.user_attrs["fingerprint"] == digits_dataset.fingerprint
    assert study.user_attrs["settings"]["folds"] == 3
    trial = study.best_trial
    a = trial.user_attrs
    assert len(a["fold_val_losses"]) == len(a["fold_train_losses"]) == len(a["best_epochs"]) == 3
    assert trial.value == pytest.approx(np.mean(a["fold_val_losses"]), rel=1e-6)
    assert a["cv_loss_std"] == pytest.approx(np.std(a["fold_val_losses"]), rel=1e-6)
    assert a["metric_name"] == "accuracy" and 0.8 < a["metric"] <= 1.0
    assert a["n_params"] > 0 and a["seconds"] > 0
    assert len(a["curve_train"]) == len(a["curve_val"]) == a["epochs"] == len(trial.intermediate_values)
    # digits has 64 numeric columns: embedding="auto" leaves the embeddings off (and out of params)
    assert set(trial.params) == {"depth", "width", "dropout", "weight_decay", "lr", "batch_size", "beta2"}
    text = summary(study, sqlite_url)
    assert f"Best trial #{trial.number}" in text and "optuna-dashboard sqlite:///" in text


def test_auto_embedding_is_searched_and_the_run_says_which_won_and_why(sqlite_url):
    # diabetes has 10 numeric columns: "auto" searches "none" against "periodic", the folds'
    # evidence decides, and the summary and the dashboard note give both sides' best and time
    from sweeps.store.notes import study_note

    spec = Study(name="emb", task="regression", data=lambda: load_diabetes(return_X_y=True),
                 space=Space(depth=1, width=(16, 32), lr=(3e-3, 3e-2)), folds=3, max_epochs=4, patience=2,
                 n_trials=6, seed=0)
    study = run(spec, sqlite_url)
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    by = {c: [t for t in complete if t.params["embedding"] == c] for c in ("none", "periodic")}
    assert by["none"] and by["periodic"]  # both tried (seeded)
    assert all("frequency_scale" in t.params for t in by["periodic"])
    assert not any("frequency_scale" in t.params for t in by["none"])
    winner = study.best_trial.params["embedding"]
    loser = "none" if winner == "periodic" else "periodic"
    best = {c: min(t.value for t in ts) for c, ts in by.items()}
    said = re.search(r"Embeddings: the search chose (\w+): best CV loss (\w+) ([\d.]+) \(trial #\d+; (\d+) complete "
                     r"trials, median [\d.]+ s each\) against (\w+) ([\d.]+) \(trial #\d+; (\d+) complete",
                     summary(study, sqlite_url))
    assert said, summary(study, sqlite_url)
    assert said.group(1) == said.group(2) == winner and said.group(5) == loser
    assert float(said.group(3)) == pytest.approx(best[winner], abs=1e-4)
    assert float(said.group(6)) == pytest.approx(best[loser], abs=1e-4)
    assert (int(said.group(4)), int(said.group(7))) == (len(by[winner]), len(by[loser]))
    assert f"Embeddings: the search chose {winner}" in study_note(study)


def test_auto_embedding_is_left_off_beyond_its_column_count_and_kept_where_named():
    from sweeps.spec.options import AUTO_EMBEDDING_MAX_NUMERIC as most

    auto = Space(depth=1, width=16)
    assert auto.resolved(6).embedding.choices == ("none", "periodic")
    assert auto.resolved(most).embedding.choices == ("none", "periodic")
    assert auto.resolved(most + 1).embedding.choices == ("none",)
    assert auto.resolved(0).embedding.choices == ("none",)  # text columns only
    assert Space(embedding="periodic").resolved(64).embedding.choices == ("periodic",)
    assert Space(embedding=["auto", "periodic"]).resolved(6).embedding.choices == ("none", "periodic")


def test_rerun_resumes_and_n_trials_adds(sqlite_url):
    spec = digits_study(n_trials=2)
    run(spec, sqlite_url)
    out = io.StringIO()
    run_study(spec, load_dataset(spec), storage=sqlite_url, progress=False, out=out)
    assert "already has 2 finished trials" in out.getvalue()
    out = io.StringIO()
    study = run_study(spec, load_dataset(spec), storage=sqlite_url, n_trials=2, progress=False, out=out)
    assert "Resuming study 'digits-test'" in out.getvalue()
    assert len(study.trials) == 4
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 4  # the resumed sampler does not replay the first run


def test_changed_data_refuses_to_continue(sqlite_url):
    run(digits_study(n_trials=1), sqlite_url)
    X, y = load_digits(return_X_y=True)
    changed = digits_study(data=(X[:-10], y[:-10]))
    with pytest.raises(SweepsError, match=r"was made with different data \(1797 rows x 64 features"):
        run(changed, sqlite_url)
    with pytest.raises(SweepsError, match=r"held out different test rows"):
        run(digits_study(test_size=0.3), sqlite_url)
    with pytest.raises(SweepsError, match=r"was run with folds=3, the study file now says folds=4"):
        run(digits_study(folds=4), sqlite_url)
    assert len(optuna.load_study(study_name="digits-test", storage=sqlite_url).trials) == 1


@pytest.mark.parametrize("batch", [1, 3])  # in batches of 3: the good trials, then the hopeless ones
def test_pruning_prunes_hopeless_trials(sqlite_url, batch):
    spec = digits_study(
        n_trials=8, max_epochs=10, patience=10,
        space=Space(depth=1, width=32, dropout=0.0, weight_decay=1e-6, lr=(1e-7, 1e-1)),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2),
    )
    study = optuna.create_study(study_name=spec.name, storage=sqlite_url)
    for _ in range(3):
        study.enqueue_trial({"lr": 1e-2})  # good trials set the median
    for _ in range(5):
        study.enqueue_trial({"lr": 1e-7})  # cannot learn in 10 epochs
    run(spec, sqlite_url, batch=batch)
    study = optuna.load_study(study_name=spec.name, storage=sqlite_url)
    states = [t.state for t in study.trials]
    assert states[:3] == [TrialState.COMPLETE] * 3
    assert states[3:] == [TrialState.PRUNED] * 5
    pruned = study.trials[3]
    assert "pruned by MedianPruner at epoch 2" in pruned.user_attrs["prune_reason"]
    assert len(pruned.intermediate_values) == 2  # stopped as soon as the warm-up allowed
    assert pruned.user_attrs["fold_val_losses"]  # its evidence was recorded before pruning


def test_the_default_pruner_is_successive_halving_with_its_first_rung_at_epoch_5(sqlite_url):
    """The measured default (docs/benchmarks.md, "Pruners"): nothing is pruned before 5 trials
    have completed, nor before epoch 5; then only the best quarter of the trials that reached
    that epoch goes on."""
    spec = digits_study(n_trials=8, max_epochs=8, patience=8,
                        space=Space(depth=1, width=32, dropout=0.0, weight_decay=1e-6, lr=(1e-7, 1e-1)))
    study = optuna.create_study(study_name=spec.name, storage=sqlite_url)
    study.enqueue_trial({"lr": 1e-7})  # cannot learn in 8 epochs, but the study is young: it finishes
    for _ in range(4):
        study.enqueue_trial({"lr": 1e-2})  # learns: sets the rung
    for _ in range(3):
        study.enqueue_trial({"lr": 1e-7})
    study = run(spec, sqlite_url)
    assert isinstance(study.pruner, AfterStartup) and study.pruner.n_startup_trials == 5
    assert isinstance(study.pruner.pruner, optuna.pruners.SuccessiveHalvingPruner)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE] * 5 + [TrialState.PRUNED] * 3
    for pruned in study.trials[5:]:
        assert len(pruned.intermediate_values) == 5  # judged at the first rung, not before
        assert pruned.user_attrs["prune_reason"].startswith(
            "pruned by SuccessiveHalvingPruner at epoch 5: mean validation loss")
        assert "not among the best of the trials that reached that epoch" in pruned.user_attrs["prune_reason"]


@pytest.mark.parametrize("batch", [1, 3])
def test_a_diverging_trial_is_pruned_with_its_reason_and_the_study_goes_on(sqlite_url, batch):
    spec = digits_study(
        name="diabetes-test", task="regression", data=lambda: load_diabetes(return_X_y=True), n_trials=3,
        space=Space(depth=2, width=32, dropout=0.0, weight_decay=1e-6, lr=(1e-3, 1e10)))
    study = optuna.create_study(study_name=spec.name, storage=sqlite_url)
    study.enqueue_trial({"lr": 1e10})
    study.enqueue_trial({"lr": 1e-2})
    study.enqueue_trial({"lr": 3e-3})
    run(spec, sqlite_url, batch=batch)
    trials = optuna.load_study(study_name=spec.name, storage=sqlite_url).trials
    assert [t.state for t in trials] == [TrialState.PRUNED, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].user_attrs["prune_reason"].startswith("diverged: the loss of fold")
    assert trials[0].user_attrs["epochs"] == 1  # ended in the epoch it diverged


def test_unreachable_storage_is_one_clear_error(tmp_path):
    spec = digits_study()
    with pytest.raises(SweepsError, match=r"cannot open storage postgresql://nobody@127.0.0.1:1/none"):
        run(spec, "postgresql://nobody@127.0.0.1:1/none")
    with pytest.raises(SweepsError, match=r"is not a storage URL"):
        run(spec, "storage/x.db")


# --- every way a trial can end badly carries its reason; the study goes on or stops in one line ---
@pytest.mark.parametrize("batch", [1, 3])
def test_a_configuration_too_big_for_memory_fails_with_its_reason_and_the_study_goes_on(sqlite_url, batch):
    spec = digits_study(n_trials=2, space=Space(depth=2, width=Categorical([16, 1_000_000]), lr=5e-3))
    study = optuna.create_study(study_name=spec.name, storage=sqlite_url)
    study.enqueue_trial({"width": 1_000_000})  # 10^12 weights: ~4 TB per fold
    study.enqueue_trial({"width": 16})
    study.enqueue_trial({"width": 16})
    run(spec, sqlite_url, batch=batch)
    trials = optuna.load_study(study_name=spec.name, storage=sqlite_url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert re.match(r"out of memory: depth 2, width 1000000 needs about \d+\.\d GiB for 3 folds, "
                    r"\d+\.\d GiB is free on cpu; narrow the space's width range", trials[0].user_attrs["fail_reason"])


def test_an_allocation_failure_while_training_fails_the_trial_not_the_study(sqlite_url, monkeypatch):
    import sweeps.sweep.objective

    real = sweeps.sweep.objective.train_trials
    calls = []

    def first_one_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] . DefaultCPUAllocator: can't allocate memory")
        return real(*args, **kwargs)

    monkeypatch.setattr(sweeps.sweep.objective, "train_trials", first_one_fails)
    run(digits_study(n_trials=2), sqlite_url)
    trials = optuna.load_study(study_name="digits-test", storage=sqlite_url).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[0].user_attrs["fail_reason"].startswith("out of memory while training: RuntimeError")


def test_failures_in_a_row_stop_the_sweep_with_one_line(sqlite_url):
    spec = digits_study(n_trials=3, space=Space(depth=3, width=1_000_000, lr=5e-3))
    with pytest.raises(SweepsError, match=r"5 trials in a row failed, the last because: out of memory: depth 3"):
        run(spec, sqlite_url)
    trials = optuna.load_study(study_name=spec.name, storage=sqlite_url).trials
    assert len(trials) == 5 and all(t.user_attrs["fail_reason"].startswith("out of memory") for t in trials)


@pytest.mark.parametrize("stop, reason", [(KeyboardInterrupt, "interrupted (Ctrl+C)"),
                                          (Terminated, "terminated (SIGTERM)")])
def test_a_stopped_trial_is_failed_with_why(sqlite_url, monkeypatch, stop, reason):
    import sweeps.sweep.objective

    def stopped(*args, **kwargs):
        raise stop()

    monkeypatch.setattr(sweeps.sweep.objective, "train_trials", stopped)
    with pytest.raises(stop):
        run(digits_study(n_trials=2), sqlite_url)
    trial = optuna.load_study(study_name="digits-test", storage=sqlite_url).trials[0]
    assert trial.state == TrialState.FAIL and trial.user_attrs["fail_reason"].startswith(reason)


def test_a_stop_inside_a_storage_write_waits_for_it_and_one_in_training_does_not():
    from sweeps.sweep import stop

    # The test must not depend on how pytest was started: a shell starts a background job with
    # SIGINT ignored, which stop.install() rightly leaves alone (nohup). Here SIGINT is as a
    # terminal gives it, for the test's length; the ignored case is checked after.
    inherited = signal.signal(signal.SIGINT, signal.default_int_handler)
    assert stop.install()
    try:
        finished = []
        with pytest.raises(KeyboardInterrupt):
            with stop.deferred():
                os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the "write"
                time.sleep(0.05)
                finished.append("write")  # ...which still completes
        assert finished == ["write"]
        with pytest.raises(KeyboardInterrupt):
            with stop.deferred(), stop.immediate():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)
                finished.append("training")  # never reached: training stops at once
        assert finished == ["write"]
    finally:
        stop.uninstall()
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            assert stop.install() and signal.getsignal(signal.SIGINT) is signal.SIG_IGN  # nohup: left ignored
        finally:
            stop.uninstall()
            signal.signal(signal.SIGINT, inherited)


def test_a_space_function_that_fails_is_one_line_before_anything_is_written(tmp_path):
    def space(trial):
        return {"depth": 1, "width": 16, "dropout": 0.0, "weight_decay": 0.0, "lr": 1e-3, "colour": "red"}

    def broken(trial):
        raise ValueError("no such layer")

    url = tmp_path / "never.db"
    with pytest.raises(SweepsError, match=r"Study.space\(trial\): unknown parameter\(s\) \['colour'\]"):
        run(digits_study(space=space), f"sqlite:///{url}")
    with pytest.raises(SweepsError, match=r"Study.space\(trial\) raised ValueError: no such layer; fix the space"):
        run(digits_study(space=broken), f"sqlite:///{url}")
    assert not url.exists()


def test_a_space_function_may_return_whole_floats_for_integer_parameters(sqlite_url):
    def space(trial):
        return {"depth": 1.0, "width": trial.suggest_float("width", 8.0, 32.0), "dropout": 0.0,
                "weight_decay": 0.0, "lr": 1e-2}

    with pytest.raises(SweepsError, match=r"width: takes whole numbers"):
        run(digits_study(space=space, n_trials=1), sqlite_url)

    def whole(trial):
        return {"depth": 1.0, "width": float(trial.suggest_int("width", 8, 32)), "dropout": 0.0,
                "weight_decay": 0.0, "lr": 1e-2}

    study = run(digits_study(space=whole, n_trials=1, name="whole"), sqlite_url)
    assert study.trials[0].state == TrialState.COMPLETE and isinstance(study.trials[0].params["width"], int)


@pytest.mark.parametrize("change", [dict(max_epochs=9), dict(patience=2),
                                    dict(space=Space(class_weight=Categorical(["none", "balanced"]),
                                                     depth=1, width=16, lr=5e-3)),
                                    dict(space=Space(resampling="under", depth=1, width=16, lr=5e-3)),
                                    dict(groups=np.arange(1797) % 3, early_stopping="worst_group")],
                         ids=["max_epochs", "patience", "class_weight", "resampling", "worst_group"])
def test_a_change_of_what_values_mean_is_refused_unless_accepted_and_then_recorded(sqlite_url, change):
    spec = digits_study(n_trials=1, space=Space(depth=1, width=16, lr=5e-3))
    run(spec, sqlite_url)
    changed = spec.replace(**change)
    with pytest.raises(SweepsError, match=r"new trials. values would not be comparable .* accept_changed_settings=True"):
        run(changed, sqlite_url, n_trials=1)
    assert len(optuna.load_study(study_name=spec.name, storage=sqlite_url).trials) == 1
    run(changed, sqlite_url, n_trials=1, accept_changed_settings=True)
    study = optuna.load_study(study_name=spec.name, storage=sqlite_url)
    assert len(study.trials) == 2 and study.user_attrs["settings"] == changed.settings
    [entry] = study.user_attrs["settings_history"]
    assert entry["from_trial"] == 1 and entry["after"] and set(entry["before"]) == set(entry["after"])


def test_narrowing_a_range_is_still_allowed(sqlite_url):
    run(digits_study(n_trials=1), sqlite_url)
    narrower = digits_study(space=Space(depth=1, width=(16, 32), dropout=0.0, weight_decay=1e-4, lr=(1e-3, 1e-2)))
    run(narrower, sqlite_url, n_trials=1)
    assert len(optuna.load_study(study_name="digits-test", storage=sqlite_url).trials) == 2


def test_trials_trained_in_one_stack_get_the_values_they_get_alone(tmp_path):
    """--batch: the same trials (same numbers, so same seeds) score the same, and the total is exact."""
    configs = [{"depth": 1, "width": 16, "lr": 1e-2}, {"depth": 1, "width": 48, "lr": 3e-3},
               {"depth": 2, "width": 32, "lr": 1e-2}, {"depth": 1, "width": 64, "lr": 2e-2},
               {"depth": 2, "width": 16, "lr": 5e-3}]
    spec = digits_study(n_trials=5, space=Space(depth=(1, 2), width=(16, 64), dropout=0.1, weight_decay=1e-5,
                                                lr=(1e-3, 3e-2)))
    values = {}
    for batch in (1, 4):
        url = f"sqlite:///{tmp_path / f'b{batch}.db'}"
        study = optuna.create_study(study_name=spec.name, storage=url)
        for params in configs:
            study.enqueue_trial(params)
        run(spec, url, batch=batch)
        trials = optuna.load_study(study_name=spec.name, storage=url).trials
        assert len(trials) == 5 and all(t.state == TrialState.COMPLETE for t in trials)
        values[batch] = [t.value for t in trials]
    np.testing.assert_allclose(values[4], values[1], rtol=1e-4)


def test_the_default_batch_is_one_where_every_width_is_compute_bound():
    from sweeps.sweep.search import COMPUTE_BOUND_WIDTH, DEFAULT_BATCH, default_batch

    assert default_batch(digits_study(space=Space(width=(16, 512)))) == DEFAULT_BATCH
    assert default_batch(digits_study(space=Space(width=COMPUTE_BOUND_WIDTH))) == 1
    assert default_batch(digits_study(space=Space(width=Categorical([256, 512])))) == 1

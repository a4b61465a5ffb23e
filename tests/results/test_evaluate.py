"""Export the best configuration, evaluate it once on the held-out test set, reload the model."""

from __future__ import annotations

import io
import json
import sqlite3

import numpy as np
import torch
import optuna
import pytest
from sklearn.datasets import load_diabetes, load_digits

import sweeps
from sweeps import SweepsError
from sweeps.data.dataset import load_dataset
from sweeps.evaluate import main as evaluate_main
from sweeps.results.evaluate import evaluate_study, report
from sweeps.export import main as export_main
from sweeps.results.export import export_config, read_config, write_config
from sweeps.data.folds import make_final_fit
from sweeps.sweep.optimize import run_study

from conftest import digits_study

SPEC = digits_study(n_trials=4, max_epochs=10)


@pytest.fixture(scope="module")
def swept_db(tmp_path_factory):
    """A real 4-trial digits sweep in SQLite, made once; tests work on copies."""
    path = tmp_path_factory.mktemp("swept") / "digits.db"
    run_study(SPEC, load_dataset(SPEC), storage=f"sqlite:///{path}", progress=False, out=io.StringIO())
    return path


@pytest.fixture
def study_url(swept_db, tmp_path):
    path = tmp_path / "storage" / "study.db"
    path.parent.mkdir()
    # SQLite's backup API copies a live database whole (the file alone may lack the WAL's pages).
    with sqlite3.connect(swept_db) as source, sqlite3.connect(path) as copy:
        source.backup(copy)
    return f"sqlite:///{path}"


def evaluate(url, dataset=None, **kwargs):
    """evaluate_study, and what the command prints: (entry, model, report, warnings)."""
    err = io.StringIO()
    entry, model = evaluate_study(SPEC, dataset or load_dataset(SPEC), storage=url, err=err, **kwargs)
    return entry, model, report(SPEC, entry), err.getvalue()


def test_export_holds_the_best_trial_and_its_provenance(study_url, tmp_path):
    study = optuna.load_study(study_name=SPEC.name, storage=study_url)
    document = export_config(study, study_url, top=3)
    best = study.best_trial
    assert document["params"] == best.params and document["trials"][0]["trial"] == best.number
    assert document["trials"][0]["cv_loss"] == best.value
    assert document["trials"][0]["cv_loss_std"] == best.user_attrs["cv_loss_std"]
    assert document["median_best_epoch"] == int(np.median(best.user_attrs["best_epochs"]))
    assert document["fingerprint"] == study.user_attrs["fingerprint"]
    assert document["seed"] == 0 and set(document["versions"]) == {"sweeps", "optuna", "torch"}
    values = [t["cv_loss"] for t in document["trials"]]
    assert len(values) == 3 and values == sorted(values)
    for fmt in ("json", "yaml"):
        path = write_config(document, tmp_path / f"best.{fmt}", fmt)
        again = read_config(path)
        assert again["params"] == {**best.params} and again["median_best_epoch"] == document["median_best_epoch"]


def test_export_cli_writes_next_to_the_database(study_url, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study_file = tmp_path / "s.py"
    study_file.write_text("import sys; sys.path.insert(0, %r)\nfrom conftest import digits_study\n"
                          "study = digits_study(n_trials=4, max_epochs=10)\n" % str(__import__("pathlib").Path(__file__).parents[1]))
    assert export_main([str(study_file), "--storage", study_url]) == 0
    assert "storage/study.db" not in capsys.readouterr().err
    written = tmp_path / "storage" / f"{SPEC.name}-best.json"
    assert json.loads(written.read_text())["study"] == SPEC.name
    assert export_main([str(study_file), "--storage", study_url, "--top", "2", "--output", "top.yaml"]) == 0
    assert len(read_config(tmp_path / "top.yaml")["trials"]) == 2


def test_evaluate_round_trip_records_and_reloads(study_url, tmp_path):
    study = optuna.load_study(study_name=SPEC.name, storage=study_url)
    config = write_config(export_config(study, study_url), tmp_path / "best.json", "json")
    entry, model, out, err = evaluate(study_url, config_path=str(config), model_path=str(tmp_path / "m.pt"))
    assert entry["params"] == study.best_params and entry["trial"] == study.best_trial.number
    assert not err  # first use of the test set: no warning
    assert "loss" in out and f"{entry['metric']:.4f}" in out and f"{study.best_value:.4f} ±" in out
    assert "Confusion matrix" in out and entry["test_rows"] == 360
    assert entry["metric"] > 0.9  # ~0.95 for this quick sweep
    assert np.asarray(entry["confusion_matrix"]).sum() == 360

    stored = optuna.load_study(study_name=SPEC.name, storage=study_url).user_attrs
    assert stored["test_evaluations"] == 1 and stored["test_result"]["metric"] == entry["metric"]
    assert stored["test_result"]["timestamp"]

    dataset = load_dataset(SPEC)
    X_test = dataset.X[dataset.test]
    reloaded = sweeps.load_model(tmp_path / "m.pt")
    np.testing.assert_array_equal(reloaded.predict_proba(X_test), model.predict_proba(X_test))
    accuracy = (reloaded.predict(X_test) == load_digits().target[dataset.test]).mean()
    assert accuracy == pytest.approx(entry["metric"])

    # A second look at the test set is allowed, but counted and warned about.
    entry2, _, _, err = evaluate(study_url, model_path=str(tmp_path / "m2.pt"))
    assert "already been used 1 time(s)" in err and entry2["evaluation"] == 2
    assert entry2["metric"] == entry["metric"]  # same config, same seed: same model
    stored = optuna.load_study(study_name=SPEC.name, storage=study_url).user_attrs
    assert stored["test_evaluations"] == 2 and len(stored["test_history"]) == 2


def test_final_fit_uses_every_non_test_row_and_nothing_else(digits_dataset):
    folds, preprocessing = make_final_fit(digits_dataset)
    assert folds.k == 1 and not folds.has_validation
    assert np.array_equal(np.sort(folds.train_rows[0]), digits_dataset.dev)
    np.testing.assert_allclose(preprocessing.center, digits_dataset.X[digits_dataset.dev].mean(0), atol=1e-4)


def snapshot(url):
    return dict(optuna.load_study(study_name=SPEC.name, storage=url).user_attrs)


def test_refuses_changed_data(study_url, tmp_path):
    X, y = load_digits(return_X_y=True)
    changed = load_dataset(digits_study(data=(X[:-1], y[:-1])))
    before = snapshot(study_url)
    with pytest.raises(SweepsError, match=r"was made with different data"):
        evaluate(study_url, dataset=changed, model_path=str(tmp_path / "m.pt"))
    assert snapshot(study_url) == before and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(study="other"), r"was exported from study 'other'"),
    (lambda d: d["fingerprint"].update(data_sha256="0" * 64), r"fingerprint does not match"),
    (lambda d: d["params"].update(lr=-1.0), r"params: Space.lr"),
    (lambda d: d.pop("params"), r"not a sweeps config file"),
])
def test_refuses_a_config_that_does_not_match(study_url, tmp_path, edit, message):
    study = optuna.load_study(study_name=SPEC.name, storage=study_url)
    document = export_config(study, study_url)
    edit(document)
    config = write_config(document, tmp_path / "bad.json", "json")
    before = snapshot(study_url)
    with pytest.raises(SweepsError, match=message):
        evaluate(study_url, config_path=str(config), model_path=str(tmp_path / "m.pt"))
    assert snapshot(study_url) == before and not (tmp_path / "m.pt").exists()


def test_no_completed_trial_unknown_study_missing_database(tmp_path):
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    optuna.create_study(study_name=SPEC.name, storage=url)
    with pytest.raises(SweepsError, match=r"has no completed trial yet"):
        evaluate(url)
    optuna.create_study(study_name="another", storage=f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(SweepsError, match=r"no study named 'digits-test' .* \(it holds 'another'\)"):
        evaluate(f"sqlite:///{tmp_path / 'other.db'}")
    with pytest.raises(SweepsError, match=r"no such study database"):
        evaluate(f"sqlite:///{tmp_path / 'nope.db'}")
    assert not (tmp_path / "nope.db").exists()


def test_cli_bad_input_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study_file = tmp_path / "s.py"
    study_file.write_text("from sklearn.datasets import load_digits\nfrom sweeps import Study\n"
                          "study = Study(name='x', task='classification', data=lambda: load_digits(return_X_y=True))\n")
    assert evaluate_main([str(study_file)]) == 2
    err = capsys.readouterr().err
    assert "no such study database" in err and "Traceback" not in err and err.count("\n") == 1
    # run from another folder than the sweep's: the line names where it looked, and why there
    assert f"{tmp_path / 'storage' / 'x.db'}: no such study database" in err
    assert "the default storage/ is found from the current folder" in err
    assert export_main([str(study_file)]) == 2
    assert not (tmp_path / "storage").exists()


def test_regression_round_trip(tmp_path):
    spec = digits_study(name="diabetes-eval", task="regression", data=lambda: load_diabetes(return_X_y=True),
                        n_trials=2, max_epochs=30)
    url = f"sqlite:///{tmp_path / 'd.db'}"
    dataset = load_dataset(spec)
    run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    entry, model = evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "d.pt"), err=io.StringIO())
    y_test = dataset.y[dataset.test]
    prediction = sweeps.load_model(tmp_path / "d.pt").predict(dataset.X[dataset.test])
    assert entry["metric_name"] == "rmse"
    assert entry["metric"] == pytest.approx(np.sqrt(np.mean((prediction - y_test) ** 2)), rel=1e-5)
    assert 0.2 < entry["r2"] < 0.7  # diabetes: linear models reach ~0.45
    with pytest.raises(SweepsError, match=r"regression model; use predict"):
        model.predict_proba(dataset.X[:2])


SPEC_FILE = """
from sklearn.datasets import load_digits
from sweeps import Space, Study
study = Study(name="digits-test", task="classification", data=lambda: load_digits(return_X_y=True),
              space=Space(depth=(1, 2), width=(16, 64), dropout=(0.0, 0.3), weight_decay=(1e-6, 1e-2),
                          lr=(1e-3, 3e-2)),
              folds=3, max_epochs=10, patience=3, test_size=0.2, n_trials=4, seed=0)
"""


def test_two_evaluations_interleaved_in_one_process_get_two_numbers(study_url):
    # The interleaving forced, deterministically: the second evaluation reserves its number
    # after the first reserved and before it recorded anything. A count read from the study
    # and written back later would give both "#1".
    from sweeps.store import record

    first, second = (optuna.load_study(study_name=SPEC.name, storage=study_url) for _ in range(2))
    (one, ledger_one, trial_one), (two, ledger_two, trial_two) = (record.reserve_test_evaluation(s)
                                                                  for s in (first, second))
    assert (one, two) == (1, 2)
    entry = dict(evaluation=0, timestamp="t", source="trial #0", loss=0.5, metric=0.9)
    record.write_test_evaluation(second, ledger_two, trial_two, {**entry, "evaluation": two})
    record.write_test_evaluation(first, ledger_one, trial_one, {**entry, "evaluation": one})
    stored = snapshot(study_url)
    assert stored["test_evaluations"] == 2 and [e["evaluation"] for e in stored["test_history"]] == [1, 2]


def test_an_evaluation_that_finishes_between_anothers_reservation_steps_does_not_shift_its_number(
        study_url, monkeypatch):
    # The other interleaving, forced: the second evaluation asks its ledger trial first (number
    # 0), then, before it reads the study's count, the first one reserves, scores and records
    # (count 2). A count read after the ask gave the second "#3" (seen once under load).
    from sweeps.store import record

    first, second = (optuna.load_study(study_name=SPEC.name, storage=study_url) for _ in range(2))
    entry = dict(evaluation=0, timestamp="t", source="trial #0", loss=0.5, metric=0.9)
    real_ask, numbers = optuna.Study.ask, []

    def ask(self, *args, **kwargs):
        trial = real_ask(self, *args, **kwargs)
        if not numbers:  # inside the second's reservation: the first runs whole
            numbers.append(None)
            one, ledger, first_trial = record.reserve_test_evaluation(first)
            record.write_test_evaluation(first, ledger, first_trial, {**entry, "evaluation": one})
            numbers.append(one)
        return trial

    monkeypatch.setattr(optuna.Study, "ask", ask)
    two, ledger_two, trial_two = record.reserve_test_evaluation(second)
    assert (numbers[1], two) == (2, 1)  # two numbers, each once
    record.write_test_evaluation(second, ledger_two, trial_two, {**entry, "evaluation": two})
    assert [e["evaluation"] for e in snapshot(study_url)["test_history"]] == [1, 2]


def test_evaluations_started_together_are_counted_apart(study_url, tmp_path):
    import subprocess
    import sys

    study_file = tmp_path / "spec.py"
    study_file.write_text(SPEC_FILE)
    runs = [subprocess.Popen([sys.executable, "-m", "sweeps.evaluate", str(study_file), "--storage", study_url,
                              "--output", str(tmp_path / f"m{i}.pt")], cwd=tmp_path, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for i in range(2)]
    results = [r.communicate(timeout=300) for r in runs]
    assert [r.returncode for r in runs] == [0, 0], results
    numbers = sorted(int(out.split("test evaluation #")[1].split(".")[0]) for out, _ in results)
    assert numbers == [1, 2]  # not "#1" twice
    assert sum("already been used 1 time(s)" in err for _, err in results) == 1  # the second one is warned
    stored = snapshot(study_url)
    assert stored["test_evaluations"] == 2 and [e["evaluation"] for e in stored["test_history"]] == [1, 2]


def test_an_unwritable_output_is_refused_before_the_test_set_is_used(study_url, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    before = snapshot(study_url)
    with pytest.raises(SweepsError, match=r"cannot write the model there .*pass another output\."):
        evaluate(study_url, model_path=str(blocker / "m.pt"))
    assert snapshot(study_url) == before  # not counted: the test set was never scored
    assert "digits-test:test-evaluations" not in optuna.get_all_study_names(study_url)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d.update(median_best_epoch=10**9), r"median_best_epoch=1000000000 exceeds the study's max_epochs=10"),
    (lambda d: d["params"].update(depth=4, width=10**6), r"depth 4, width 1000000 needs about \d+"),
])
def test_a_config_with_absurd_values_is_one_line(study_url, tmp_path, edit, message):
    study = optuna.load_study(study_name=SPEC.name, storage=study_url)
    document = export_config(study, study_url)
    edit(document)
    config = write_config(document, tmp_path / "absurd.json", "json")
    before = snapshot(study_url)
    with pytest.raises(SweepsError, match=message):
        evaluate(study_url, config_path=str(config), model_path=str(tmp_path / "m.pt"))
    assert snapshot(study_url) == before and not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("final_model, members", [("folds", 3), ("refit-seeds", 5)])
def test_ensemble_final_models_are_what_evaluate_scored_and_reload(study_url, tmp_path, final_model, members):
    spec = SPEC.replace(final_model=final_model)
    dataset = load_dataset(spec)
    entry, model = evaluate_study(spec, dataset, storage=study_url, model_path=str(tmp_path / "e.pt"), err=io.StringIO())
    assert entry["final_model"] == final_model and entry["members"] == members == model.n_members
    reloaded = sweeps.load_model(tmp_path / "e.pt")
    X_test, y_test = dataset.X[dataset.test], dataset.y[dataset.test]
    probabilities = reloaded.predict_proba(X_test)
    np.testing.assert_allclose(probabilities, model.predict_proba(X_test), rtol=0, atol=1e-7)
    assert (probabilities.argmax(1) == y_test).mean() == pytest.approx(entry["metric"])
    # the average of the members' probabilities, each member with its own preprocessing
    singles = [sweeps.TrainedModel("classification", {}, [reloaded.preprocessings[p]],
                                   reloaded.net.select(torch.tensor([i])), [0], reloaded.classes).predict_proba(X_test)
               for i, p in enumerate(reloaded.member_preprocessing)]
    np.testing.assert_allclose(probabilities, np.mean(singles, 0), rtol=1e-5, atol=1e-6)
    if final_model == "folds":  # the trial's own fold-models: three preprocessings, one per fold
        assert len(reloaded.preprocessings) == 3 and reloaded.member_preprocessing == [0, 1, 2]


def test_a_disk_that_cannot_take_the_model_leaves_the_test_set_unused(study_url, tmp_path, monkeypatch):
    """Full at the first write (before scoring): nothing recorded. Full at the second (the copy with
    the test result): the score is printed and recorded with its use, and the first copy stays."""
    from sweeps.engine.trained import TrainedModel

    real_save = TrainedModel.save
    calls = []

    def full_after(n):
        def save(self, path):
            calls.append(path)
            if len(calls) > n:
                raise OSError(28, "No space left on device")
            return real_save(self, path)
        return save

    before = snapshot(study_url)
    monkeypatch.setattr(TrainedModel, "save", full_after(0))
    with pytest.raises(SweepsError, match=r"the model cannot be written \(No space left on device\); .* the held-out "
                                          r"test set was not used"):
        evaluate(study_url, model_path=str(tmp_path / "m.pt"))
    assert snapshot(study_url) == before and not (tmp_path / "m.pt").exists()

    calls.clear()
    monkeypatch.setattr(TrainedModel, "save", full_after(1))
    entry, _, out, err = evaluate(study_url, model_path=str(tmp_path / "m.pt"))
    assert f"{entry['loss']:10.4f}" in out  # printed
    assert snapshot(study_url)["test_evaluations"] == 1 == entry["evaluation"]  # recorded with its use
    assert "could not be written or attached (No space left on device)" in err and "evaluation #1" in err
    assert sweeps.load_model(tmp_path / "m.pt").info.get("study") == SPEC.name  # the copy saved before scoring

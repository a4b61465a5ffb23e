"""final_model="ensemble": out-of-fold predictions kept per trial, greedy selection over them, and
the weighted ensemble that evaluate scores once and load_model, predict and ONNX reproduce."""

from __future__ import annotations

import io
import json

import numpy as np
import optuna
import pytest
import torch

import sweeps
from sweeps import Space, SweepsError
from sweeps.data.dataset import load_dataset
from sweeps.data.folds import make_folds
from sweeps.results.ensemble import ensemble_selection, select
from sweeps.results.diagnose import mismatch_verdict
from sweeps.results.evaluate import evaluate_study, report
from sweeps.store import candidates
from sweeps.sweep.optimize import run_study

from conftest import digits_study


def test_greedy_selection_adds_what_lowers_the_loss_of_the_average():
    y = np.array([0, 1, 0, 1])
    good_on_first = np.array([[0.9, 0.1], [0.5, 0.5], [0.9, 0.1], [0.5, 0.5]])  # right on rows 0, 2
    good_on_second = np.array([[0.5, 0.5], [0.1, 0.9], [0.5, 0.5], [0.1, 0.9]])  # right on rows 1, 3
    wrong = np.array([[0.1, 0.9], [0.9, 0.1], [0.1, 0.9], [0.9, 0.1]])
    ones = np.ones(4)
    counts = select([good_on_first, good_on_second, wrong], y, True, ones, ones, rounds=4)
    assert counts.tolist() == [2, 2, 0]  # the two complementary trials, equally; never the wrong one
    regression = select([np.array([[1.0], [1.0]]), np.array([[3.0], [3.0]])], np.array([2.0, 2.0]), False,
                        np.ones(2), np.ones(2), rounds=2)
    assert regression.tolist() == [1, 1]  # their average is exact
    chosen = ensemble_selection([7, 8, 9], [good_on_first, good_on_second, wrong], y, True, ones, ones,
                                np.array([0, 1, 0, 1]))
    assert set(chosen.trials) == {7, 8} and sum(chosen.weights) == pytest.approx(1.0)
    assert chosen.oof_loss < chosen.best_single_loss  # the ensemble beats each on the rows it saw
    assert chosen.honest_loss >= chosen.oof_loss  # selecting on the scored rows is optimistic


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ensemble")
    spec = digits_study(name="ens", n_trials=5, final_model="ensemble", candidates=3)
    url = f"sqlite:///{folder / 'ens.db'}"
    dataset = load_dataset(spec)
    study = run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    return spec, dataset, url, study, folder


def test_only_the_best_trials_keep_their_predictions_and_never_of_held_out_rows(swept):
    spec, dataset, url, study, folder = swept
    kept, missing = candidates.read(candidates.folder_for(url, spec.name), study, dataset)
    complete = sorted((t for t in study.trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert [c.trial for c in kept] == [t.number for t in complete[:3]] and not missing
    folds = make_folds(dataset, spec.folds, spec.seed, scaling=spec.preprocessing)
    for candidate in kept:
        assert candidate.oof.shape == (len(dataset.dev), 10) and np.isfinite(candidate.oof).all()
        model = candidate.model()  # its fold-models: member f predicts the rows of fold f
        outputs = torch.softmax(model.member_outputs(dataset.rows(dataset.dev)), -1).numpy()
        for f, rows in enumerate(folds.val_rows):
            at = np.searchsorted(dataset.dev, rows)
            np.testing.assert_allclose(candidate.oof[at], outputs[f, at], atol=1e-5)
    assert not set(dataset.test) & set(dataset.dev)  # the rows predicted are the development rows alone


def test_evaluate_scores_the_ensemble_once_and_it_reloads_and_exports(swept, tmp_path):
    spec, dataset, url, study, folder = swept
    entry, model = evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "m.pt"), err=io.StringIO())
    ensemble = entry["ensemble"]
    assert entry["final_model"] == "ensemble" and sum(ensemble["weights"]) == pytest.approx(1.0)
    assert ensemble["oof_loss"] <= ensemble["best_single_loss"] + 1e-12  # greedy starts from the best
    assert entry["honest_cv_loss"] == ensemble["honest_loss"] and "an ensemble of trials #" in report(spec, entry)
    # the mismatch check compares the test loss with the folds' spread: the best trial's, for an
    # ensemble's out-of-fold loss is one number (not a spread of zero, which made any test loss "far")
    spread = study.best_trial.user_attrs["cv_loss_std"]
    verdict = mismatch_verdict(optuna.load_study(study_name=spec.name, storage=url), dataset, spec)
    assert spread > 0 and f"± {spread:.4f} over folds" in verdict.evidence[1]
    loaded = sweeps.load_model(tmp_path / "m.pt")
    X = dataset.rows(dataset.test)
    np.testing.assert_allclose(loaded.predict_proba(X), model.predict_proba(X), atol=1e-6)
    log_p = loaded.log_proba(X)
    assert entry["loss"] == pytest.approx(float(-log_p[torch.arange(len(X)), torch.as_tensor(dataset.y[dataset.test])]
                                                .mean()), rel=1e-5)
    pytest.importorskip("onnxruntime")
    from sweeps.results.onnx import export_onnx

    export_onnx(loaded, tmp_path / "m.onnx", X[:64])  # checked against load_model inside


def test_the_folds_preprocessings_are_stored_once_beside_the_candidates_and_in_an_ensemble_file(swept, tmp_path):
    spec, dataset, url, study, folder = swept
    kept = candidates.folder_for(url, spec.name)
    shared = list(kept.glob("preprocessing-*.pt"))
    assert len(shared) == 1  # every trial's folds are the same: one file, which each trial names
    metas = [json.loads(p.read_text()) for p in kept.glob("trial-*.json")]
    assert {m["preprocessing"] for m in metas} == {shared[0].name}
    model_bytes = [p.stat().st_size for p in kept.glob("trial-*-model.pt")]
    assert max(model_bytes) < shared[0].stat().st_size / 4  # digits' quantile tables dwarf a small net
    entry, model = evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "m.pt"), err=io.StringIO())
    assert len(model.parts) >= 2
    from safetensors import safe_open

    with safe_open(str(tmp_path / "m.pt"), framework="pt") as f:
        stored = [k for k in f.keys() if ".preprocessing." in k]
    assert {k.split(".")[0] for k in stored} == {"part0"}  # the other parts name part 0's
    loaded = sweeps.load_model(tmp_path / "m.pt")
    assert all(p.preprocessings is loaded.parts[0].preprocessings for p in loaded.parts)
    X = dataset.rows(dataset.test)
    np.testing.assert_array_equal(loaded.predict_proba(X), model.predict_proba(X))


def test_a_damaged_candidate_is_one_line(swept, tmp_path):
    spec, dataset, url, study, folder = swept
    kept, _ = candidates.read(candidates.folder_for(url, spec.name), study, dataset)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "trial-0-model.pt").write_bytes(kept[0].model_path.read_bytes()[:100])
    candidate = candidates.Candidate(0, 0.0, kept[0].oof, broken / "trial-0-model.pt", kept[0].preprocessing_path)
    with pytest.raises(SweepsError, match=r"a damaged candidate .* remove .* and run the sweep again"):
        candidate.model()


def test_what_an_ensemble_cannot_be_made_of_is_one_line_and_records_nothing(swept, tmp_path):
    spec, dataset, url, study, folder = swept
    with pytest.raises(SweepsError, match="--config names one configuration"):
        evaluate_study(spec, dataset, storage=url, config_path=str(tmp_path / "c.json"), err=io.StringIO())
    few = digits_study(name="few", n_trials=1, final_model="ensemble")
    few_url = f"sqlite:///{tmp_path / 'few.db'}"
    run_study(few, dataset, storage=few_url, progress=False, out=io.StringIO())
    with pytest.raises(SweepsError, match=r"selects among the study's complete trials kept as candidates, and 1 is "
                                          r"here; run more trials"):
        evaluate_study(few, dataset, storage=few_url, model_path=str(tmp_path / "f.pt"), err=io.StringIO())
    assert "test_evaluations" not in optuna.load_study(study_name="few", storage=few_url).user_attrs
    kept = candidates.folder_for(url, spec.name)
    meta = next(kept.glob("trial-*.json"))
    original = meta.read_text()
    document = json.loads(original)
    document["fingerprint"]["data_sha256"] = "0" * 64  # written for other data
    meta.write_text(json.dumps(document))
    try:
        with pytest.raises(SweepsError, match=r"were written for other data"):
            evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "o.pt"), err=io.StringIO())
    finally:
        meta.write_text(original)  # the module's sweep is shared by the tests after this one


def test_candidates_zero_keeps_nothing(tmp_path):
    spec = digits_study(name="none-kept", n_trials=2, candidates=0, space=Space(depth=1, width=16))
    url = f"sqlite:///{tmp_path / 'n.db'}"
    run_study(spec, load_dataset(spec), storage=url, progress=False, out=io.StringIO())
    assert not candidates.folder_for(url, spec.name).exists()


def test_auto_is_the_ensemble_for_a_regression_with_candidates_and_the_folds_otherwise(tmp_path):
    from sklearn.datasets import load_diabetes

    regression = dict(task="regression", data=lambda: load_diabetes(return_X_y=True), n_trials=3,
                      space=Space(depth=1, width=(16, 32), lr=(3e-3, 3e-2)))
    spec = digits_study(name="auto", **regression)
    assert spec.final_model == "auto"  # the default
    url = f"sqlite:///{tmp_path / 'a.db'}"
    dataset = load_dataset(spec)
    run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    entry, model = evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "a.pt"), err=io.StringIO())
    assert entry["final_model"] == "ensemble" and model.info["final_model"] == "ensemble"
    assert "a regression, 3 trials kept as candidates" in report(spec, entry)
    none_kept = digits_study(name="auto-none", candidates=0, **regression)
    run_study(none_kept, dataset, storage=url, progress=False, out=io.StringIO())
    entry, model = evaluate_study(none_kept, dataset, storage=url, model_path=str(tmp_path / "n.pt"),
                                  err=io.StringIO())
    assert entry["final_model"] == "folds" and model.info["final_model"] == "folds"
    assert "a regression, but 0 trial(s) kept as candidates" in report(none_kept, entry)
    classification = digits_study(name="auto-cls", n_trials=2, space=Space(depth=1, width=16))
    run_study(classification, load_dataset(classification), storage=url, progress=False, out=io.StringIO())
    entry, _ = evaluate_study(classification, load_dataset(classification), storage=url,
                              model_path=str(tmp_path / "c.pt"), err=io.StringIO())
    assert entry["final_model"] == "folds" and "a classification keeps" in entry["final_model_reason"]


def test_an_ensemble_transforms_the_rows_once_per_preprocessing_its_parts_share(swept, tmp_path, monkeypatch):
    from sweeps.data.preprocess import Preprocessing

    spec, dataset, url, study, folder = swept
    _, model = evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "m.pt"), err=io.StringIO())
    X = dataset.rows(dataset.test)
    alone = np.sum([w * p.predict_proba(X) for w, p in zip(model.weights, model.parts)], axis=0)
    calls = []
    original = Preprocessing.features

    def counted(self, rows):
        calls.append(id(self))
        return original(self, rows)

    monkeypatch.setattr(Preprocessing, "features", counted)
    for ensemble in (model, sweeps.load_model(tmp_path / "m.pt")):  # as evaluate built it, and as loaded
        calls.clear()
        np.testing.assert_allclose(ensemble.predict_proba(X), alone, atol=1e-6)  # the same predictions
        assert len(model.parts) >= 2 and len(calls) == len(set(calls)) == spec.folds  # once per fold's transform

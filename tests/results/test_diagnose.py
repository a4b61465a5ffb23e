"""Diagnosis: each of the four problems built for real gets its verdict; a healthy study none."""

from __future__ import annotations

import io

import numpy as np
import optuna
import pytest
from optuna_dashboard import get_note
from sklearn.datasets import load_digits

from sweeps import Categorical, Space, SweepsError
from sweeps.data.dataset import load_dataset
from sweeps.diagnose import main as diagnose_main
from sweeps.results.diagnose import Thresholds, imbalance_hints, diagnose_study
from sweeps.results.evaluate import evaluate_study
from sweeps.sweep.optimize import run_study

from conftest import digits_study

X, Y = load_digits(return_X_y=True)


def sweep_and_diagnose(spec, tmp_path, evaluate=False, enqueue=(), progress=None):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    dataset = load_dataset(spec)
    if enqueue:
        study = optuna.create_study(study_name=spec.name, storage=url)
        for params in enqueue:
            study.enqueue_trial(params)
    run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    if evaluate:
        evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "m.pt"),
                       err=io.StringIO())
    diagnosis = diagnose_study(spec, dataset, storage=url, progress=progress)
    return diagnosis, url


def status(diagnosis):
    return {v.problem: v.status for v in diagnosis.verdicts}


def test_healthy_digits_study_flags_nothing(tmp_path):
    spec = digits_study(space=Space(depth=(1, 3), width=(32, 256), dropout=(0.0, 0.3), weight_decay=(1e-6, 1e-3),
                                    lr=(1e-3, 1e-2)), folds=3, max_epochs=30, patience=5, n_trials=6)
    diagnosis, url = sweep_and_diagnose(spec, tmp_path, evaluate=True)
    assert status(diagnosis) == {"model bias": "no", "optimization": "no", "overfitting": "no", "mismatch": "no"}
    assert "No problem found" in diagnosis.report
    # Baselines on the same folds sit in the report beside the best trial, and are stored once.
    study = optuna.load_study(study_name=spec.name, storage=url)
    assert set(study.user_attrs["baselines"]) == {"logistic regression", "SVM (SVC, RBF)", "shallowest net (depth 1)"}
    assert "| logistic regression |" in diagnosis.report and "| best trial #" in diagnosis.report
    assert [p["fraction"] for p in study.user_attrs["learning_curve"]] == [0.25, 0.5, 0.75, 1.0]
    assert study.user_attrs["diagnosis"]["problems"] == []
    # The report is on disk, in the dashboard's study note, and its three plots are attached.
    assert (tmp_path / f"{spec.name}-diagnosis.md").read_text() == diagnosis.report
    note = get_note(study)
    assert "## Diagnosis of study" in note and "Held-out test result" in note
    plots = [k for k in study._storage.get_study_system_attrs(study._study_id) if "sweeps-" in k]
    assert {p.split(":")[-2] for p in plots} >= {"sweeps-curves", "sweeps-depth", "sweeps-learning-curve"}


def test_model_bias_with_a_net_too_small(tmp_path):
    spec = digits_study(space=Space(depth=1, width=2, dropout=0.0, weight_decay=1e-4, lr=(3e-3, 3e-2)),
                        max_epochs=30, patience=5, n_trials=3)
    diagnosis, _ = sweep_and_diagnose(spec, tmp_path)
    verdict = diagnosis.verdict("model bias")
    assert verdict.status == "yes"
    assert "widen the depth and width ranges" in verdict.remedies[0]
    assert any("lowest training loss of a simple baseline" in e for e in verdict.evidence)
    assert diagnosis.verdict("optimization").status == "not checked"  # one depth only


def test_not_bias_when_a_linear_model_validates_as_well_as_the_nets(tmp_path):
    # A linear target under heavy noise: ridge regression is all there is to find. The nets
    # (regularised) fit the training rows about as closely as ridge, far less closely than the
    # RBF SVM that memorises them: the training-loss rule alone would say "bias, widen depth and
    # width", which cannot help here.
    from sklearn.datasets import make_regression

    X_lin, y_lin = make_regression(n_samples=600, n_features=8, n_informative=8, noise=60.0, random_state=0)
    spec = digits_study(task="regression", data=(X_lin, y_lin), n_trials=1, max_epochs=40, patience=8,
                        space=Space(depth=1, width=16, dropout=0.4, weight_decay=3e-3, lr=5e-3))
    steps = []
    diagnosis, url = sweep_and_diagnose(spec, tmp_path, progress=steps.append)
    # each step is told as it starts, numbered, with the time so far (the command prints them)
    assert [line.split("]")[0] for line in steps] == [f"[{i}/6" for i in range(1, 7)]
    assert "baselines on the same folds" in steps[0] and "learning curve" in steps[2] and "s so far)" in steps[-1]
    verdict = diagnosis.verdict("model bias")
    net = min(t.user_attrs["train_loss"] for t in optuna.load_study(study_name=spec.name, storage=url).trials)
    base = min(b["train_loss"] for name, b in diagnosis.baselines.items() if not name.startswith("shallowest"))
    assert net > (1 - Thresholds().bias_margin) * base  # what the training-loss rule alone calls bias
    assert verdict.status == "no", verdict.summary
    assert verdict.summary.startswith("the nets add nothing over ridge regression") and "will not help" in verdict.summary
    assert "add features" in verdict.remedies[1] and "model bias" not in diagnosis.problems


def test_optimization_when_deeper_trains_worse(tmp_path):
    # A learning rate far too high for deep narrow nets: depth 8 stays at the chance-level loss
    # (2.30) in every fold, while depth 1 fits the training rows (0.1-0.6 over seeds).
    spec = digits_study(space=Space(depth=(1, 8), width=16, dropout=0.0, weight_decay=1e-4, lr=0.2),
                        max_epochs=40, patience=8, n_trials=4, pruner=optuna.pruners.NopPruner())
    diagnosis, _ = sweep_and_diagnose(spec, tmp_path, enqueue=[{"depth": d} for d in (1, 2, 6, 8)])
    verdict = diagnosis.verdict("optimization")
    assert verdict.status == "yes", verdict.evidence
    assert "lower learning rates" in verdict.remedies[0]
    assert diagnosis.by_depth[8]["train_loss"] > diagnosis.by_depth[1]["train_loss"] + 0.1


def test_overfitting_with_few_rows_and_a_wide_unregularised_net(tmp_path):
    rows = np.random.default_rng(0).choice(len(Y), 300, replace=False)
    spec = digits_study(data=(X[rows], Y[rows]), space=Space(depth=2, width=1024, dropout=0.0, weight_decay=0.0,
                                                             lr=(1e-3, 3e-3)),
                        max_epochs=60, patience=8, n_trials=2)
    diagnosis, _ = sweep_and_diagnose(spec, tmp_path)
    verdict = diagnosis.verdict("overfitting")
    assert verdict.status == "yes", verdict.evidence
    assert verdict.remedies[0].startswith("more training data")  # the learning curve still falls
    assert diagnosis.learning_curve[0]["val_loss"] > diagnosis.learning_curve[-1]["val_loss"]


def test_mismatch_when_the_test_set_comes_from_a_shifted_distribution(tmp_path):
    # Train on the digits as scanned; test on the same digits scanned darker (intensity shift).
    rng = np.random.default_rng(0)
    order = rng.permutation(len(Y))
    train, test = order[:1400], order[1400:]
    shifted = np.clip(X[test] * 0.6 + 5.0, 0, 16)
    spec = digits_study(data=(X[train], Y[train]), test_data=(shifted, Y[test]),
                        space=Space(depth=1, width=64, dropout=0.1, weight_decay=1e-4, lr=(3e-3, 1e-2)),
                        max_epochs=30, patience=5, n_trials=2)
    diagnosis, _ = sweep_and_diagnose(spec, tmp_path, evaluate=True)
    verdict = diagnosis.verdict("mismatch")
    assert verdict.status == "yes", verdict.evidence
    assert "AUC" in verdict.summary and any("domain adaptation" in r and "target_data" in r for r in verdict.remedies)
    assert any('Space(resampling=Categorical(["none", "over", "under"]))' in r for r in verdict.remedies)
    assert any('Study(groups=' in r and 'early_stopping="worst_group"' in r for r in verdict.remedies)
    assert any("Space(freeze=(0, its depth))" in r for r in verdict.remedies)


def test_a_neglected_minority_gets_the_balancing_options_as_a_hint():
    spec = digits_study()
    neglected = {"metric": 0.97, "balanced_accuracy": 0.81}
    (hint,) = imbalance_hints(spec, neglected)
    assert "balanced accuracy 0.8100 vs accuracy 0.9700" in hint and 'resampling=Categorical(' in hint
    assert imbalance_hints(spec, {"metric": 0.97, "balanced_accuracy": 0.95}) == []  # close enough
    balancing = digits_study(space=Space(resampling=Categorical(["none", "under"])))
    assert imbalance_hints(balancing, neglected) == []  # the space already balances


def test_mismatch_is_not_checked_before_evaluate(tmp_path):
    spec = digits_study(n_trials=2, max_epochs=5)
    diagnosis, _ = sweep_and_diagnose(spec, tmp_path)
    assert diagnosis.verdict("mismatch").status == "not checked"
    assert "sweeps.evaluate" in diagnosis.verdict("mismatch").summary


def test_thresholds_are_configurable():
    th = Thresholds().with_settings(["overfit_gap=0.5", "top_trials=5"])
    assert th.overfit_gap == 0.5 and th.top_trials == 5
    with pytest.raises(SweepsError, match=r"--set 'nope=1': expected NAME=VALUE"):
        Thresholds().with_settings(["nope=1"])
    with pytest.raises(SweepsError, match=r"is not a number"):
        Thresholds().with_settings(["overfit_gap=high"])


def test_cli_without_a_study_is_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    study_file = tmp_path / "s.py"
    study_file.write_text("from sklearn.datasets import load_digits\nfrom sweeps import Study\n"
                          "study = Study(name='x', task='classification', data=lambda: load_digits(return_X_y=True))\n")
    assert diagnose_main([str(study_file)]) == 2
    err = capsys.readouterr().err
    assert "no such study database" in err and "Traceback" not in err
    assert diagnose_main([str(study_file), "--set", "bad"]) == 2


def test_baselines_of_a_class_balanced_study_are_scored_as_its_trials_are():
    # A study that searches class weighting scores every trial by the class-balanced loss; its
    # baselines must be on that scale, or the nets look several times worse than they are and
    # "bias" fires (mammography said "model family too weak": 0.21 against a plain 0.06).
    import torch
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    from sweeps import Study
    from sweeps.data.folds import make_folds
    from sweeps.engine.scores import mean_losses
    from sweeps.engine.weights import class_weights
    from sweeps.results.baselines import _fold_arrays, chance_loss, fit_baselines

    spec = Study(name="balanced", task="classification", data=lambda: load_breast_cancer(return_X_y=True),
                 space=Space(class_weight=Categorical(["none", "balanced"])), folds=3)
    assert spec.balanced_validation
    folds = make_folds(load_dataset(spec), 3, 0)
    balanced = fit_baselines(folds, 0, balanced=True)["logistic regression"]
    expected = []
    for f in range(3):  # the trials' own scorer, on a balanced logistic regression's probabilities
        X, y, X_val, y_val = _fold_arrays(folds, f)
        model = LogisticRegression(max_iter=2000, class_weight="balanced").fit(X, y)
        log_p = torch.log(torch.as_tensor(model.predict_proba(X_val), dtype=torch.float32))[None]
        loss, _ = mean_losses(log_p, torch.as_tensor(y_val, dtype=torch.int64)[None], torch.ones(1, len(y_val)),
                              True, class_weights(folds)[f:f + 1])
        expected.append(float(loss[0]))
    assert balanced["val_loss"] == pytest.approx(np.mean(expected), rel=1e-4)
    assert balanced["val_loss"] != pytest.approx(fit_baselines(folds, 0)["logistic regression"]["val_loss"], rel=0.02)
    assert chance_loss(folds, balanced=True) == pytest.approx(np.log(2))  # uniform: every class weighs alike

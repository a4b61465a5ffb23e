"""The methodology's remedies as options: class weights, input-noise augmentation, transfer."""

from __future__ import annotations

import io

import numpy as np
import optuna
import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits
from sklearn.metrics import balanced_accuracy_score, f1_score

import sweeps
from sweeps import Categorical, Space, SweepsError
from sweeps.data import load_dataset
from sweeps.evaluate import evaluate_study
from sweeps.folds import make_folds
from sweeps.model import StackedMLP, loss_and_grad
from sweeps.run import run_study
from sweeps.train import NetConfig, train_folds

from conftest import digits_study


def test_weighted_loss_matches_torch_cross_entropy_with_weights():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 30, 3, generator=gen, requires_grad=True)
    y = torch.randint(0, 3, (2, 30), generator=gen)
    weights = torch.tensor([[1.0, 2.0, 5.0], [0.5, 1.0, 3.0]])
    reference = sum(torch.nn.functional.cross_entropy(logits[f], y[f], weight=weights[f]) for f in range(2))
    reference.backward()
    loss_sum, grad = loss_and_grad(logits.detach().clone(), y, True, weights)
    torch.testing.assert_close(grad, logits.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss_sum.sum() / 30, reference.detach(), rtol=1e-5, atol=1e-6)


def imbalanced_noise_folds():
    """A 5 % minority that the features cannot predict: the loss's optimum is the class prior."""
    X, _ = load_digits(return_X_y=True)
    y = (np.random.default_rng(0).random(len(X)) < 0.05).astype(int)
    return make_folds(load_dataset(digits_study(data=(X, y))), 3, 0)


def minority_probability(result, folds) -> float:
    out, _ = result.model.forward(folds.X_val)
    p = torch.softmax(out, dim=-1)[..., 1]
    return float((p * folds.val_weight).sum() / folds.val_weight.sum())


def test_balanced_class_weights_give_the_minority_its_weight():
    folds = imbalanced_noise_folds()
    plain = train_folds(folds, NetConfig(1, 8, 0.0, 1e-2, 1e-2), max_epochs=15, patience=None, seed=0)
    weighted = train_folds(folds, NetConfig(1, 8, 0.0, 1e-2, 1e-2, class_weight="balanced",
                                            balanced_validation=True), max_epochs=15, patience=None, seed=0)
    # Unweighted, the net learns the prior (~0.05); balanced, the minority weighs ~19x and the
    # net's minority probability moves toward 0.5.
    assert minority_probability(plain, folds) < 0.15
    assert minority_probability(weighted, folds) > 0.3



def test_a_searched_class_weight_scores_every_trial_on_one_scale():
    folds = imbalanced_noise_folds()
    same = dict(max_epochs=3, patience=None, seed=0)
    plain = train_folds(folds, NetConfig(1, 8, 0.0, 1e-2, 1e-2), **same)
    scored_balanced = train_folds(folds, NetConfig(1, 8, 0.0, 1e-2, 1e-2, balanced_validation=True), **same)
    # The same training (identical curves); only the validation loss weighs classes.
    assert plain.curve_train == scored_balanced.curve_train
    assert scored_balanced.cv_loss > plain.cv_loss  # the minority it neglects now counts half


def test_balanced_accuracy_and_macro_f1_match_scikit_learn(digits_folds):
    result = train_folds(digits_folds, NetConfig(1, 32, 0.0, 1e-4, 3e-3), max_epochs=5, patience=None, seed=0)
    for f in range(3):
        real = digits_folds.val_weight[f].bool()
        y = digits_folds.y_val[f][real].numpy()
        pred = result.model.select(torch.tensor([f])).forward(digits_folds.X_val[f][real].unsqueeze(0))[0][0]
        pred = pred.argmax(-1).numpy()
        assert result.balanced_accuracies[f] == pytest.approx(balanced_accuracy_score(y, pred), abs=1e-9)
        assert result.macro_f1s[f] == pytest.approx(f1_score(y, pred, average="macro"), abs=1e-9)


def test_class_weight_and_noise_are_searchable_and_recorded(tmp_path):
    spec = digits_study(space=Space(depth=1, width=16, lr=(3e-3, 1e-2), class_weight=Categorical(["none", "balanced"]),
                                    noise=(0.0, 0.5)), n_trials=4, max_epochs=4)
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = run_study(spec, load_dataset(spec), storage=url, progress=False, out=io.StringIO())
    for trial in study.trials:
        assert trial.params["class_weight"] in ("none", "balanced") and 0 <= trial.params["noise"] <= 0.5
        assert 0 < trial.user_attrs["balanced_accuracy"] <= 1 and 0 < trial.user_attrs["macro_f1"] <= 1
    plain = run_study(digits_study(name="plain", n_trials=1, max_epochs=2), load_dataset(digits_study()),
                      storage=url, progress=False, out=io.StringIO())
    assert "noise" not in plain.trials[0].params and "class_weight" not in plain.trials[0].params
    with pytest.raises(SweepsError, match=r"Space.class_weight: choices are 'none', 'balanced'"):
        Space(class_weight="auto")


def test_input_noise_perturbs_training_but_it_still_learns(digits_folds):
    clean = train_folds(digits_folds, NetConfig(1, 32, 0.0, 1e-4, 3e-3), max_epochs=8, patience=None, seed=0)
    noisy = train_folds(digits_folds, NetConfig(1, 32, 0.0, 1e-4, 3e-3, noise=0.5), max_epochs=8, patience=None, seed=0)
    assert noisy.curve_train[-1] > clean.curve_train[-1]  # harder training rows...
    assert np.mean(noisy.metrics) > 0.9  # ...and still a good classifier


def diabetes_spec(**changes):
    fields = dict(name="diab", task="regression", data=lambda: load_diabetes(return_X_y=True),
                  space=Space(depth=2, width=16, dropout=0.0, weight_decay=1e-4, lr=(1e-3, 1e-2), batch_size=32),
                  n_trials=2, max_epochs=10, final_model="refit")  # transfer starts from one net
    return digits_study(**{**fields, **changes})


@pytest.fixture(scope="module")
def source_model(tmp_path_factory):
    """A model trained and saved by evaluate, to transfer from."""
    folder = tmp_path_factory.mktemp("source")
    spec = diabetes_spec()
    dataset = load_dataset(spec)
    url = f"sqlite:///{folder / 's.db'}"
    run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    evaluate_study(spec, dataset, storage=url, model_path=str(folder / "source.pt"), out=io.StringIO(),
                   err=io.StringIO())
    return folder / "source.pt"


def test_transfer_starts_every_fold_from_the_saved_model(source_model):
    source = sweeps.load_model(source_model).net
    folds = make_folds(load_dataset(diabetes_spec()), 3, 0)
    result = train_folds(folds, NetConfig(2, 16, 0.0, 0.0, 1e-9), max_epochs=1, patience=None, seed=5, init=source)
    for trained, start in zip(result.model.weights, source.weights):
        torch.testing.assert_close(trained, start.expand_as(trained), rtol=0, atol=1e-6)  # lr ~ 0: unchanged


def test_transfer_study_fixes_architecture_and_searches_lr(source_model, tmp_path):
    spec = diabetes_spec(name="fine-tune", init_from=str(source_model),
                         space=Space(depth=(1, 4), width=(8, 512), lr=(1e-4, 1e-3), batch_size=32))
    url = f"sqlite:///{tmp_path / 't.db'}"
    study = run_study(spec, load_dataset(spec), storage=url, progress=False, out=io.StringIO())
    for trial in study.trials:
        assert trial.params["depth"] == 2 and trial.params["width"] == 16  # the saved model's
        assert 1e-4 <= trial.params["lr"] <= 1e-3


def test_transfer_from_a_model_with_other_features_is_refused_before_writing(source_model, tmp_path):
    spec = digits_study(init_from=str(source_model))  # digits: 64 features, not diabetes' 10
    url = tmp_path / "never.db"
    with pytest.raises(SweepsError, match=r"takes 10 features and gives 1 outputs; this study's data has 64"):
        run_study(spec, load_dataset(spec), storage=f"sqlite:///{url}", progress=False, out=io.StringIO())
    assert not url.exists()
    with pytest.raises(SweepsError, match=r"no such model file"):
        run_study(digits_study(init_from=str(tmp_path / "nope.pt")), load_dataset(digits_study()),
                  storage=f"sqlite:///{url}", progress=False, out=io.StringIO())

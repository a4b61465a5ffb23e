"""The methodology's remedies as options: class weights, input-noise augmentation, transfer."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import optuna
import pytest
import torch
from sklearn.datasets import load_diabetes, load_digits
from sklearn.metrics import balanced_accuracy_score, f1_score

import sweeps
import sweeps.engine.batches
from sweeps import Categorical, Space, SweepsError
from sweeps.data.dataset import load_dataset
from sweeps.results.evaluate import evaluate_study
from sweeps.data.folds import make_folds
from sweeps.engine.losses import loss_and_grad
from sweeps.sweep.optimize import run_study
from sweeps.engine.batches import class_rows, epoch_class_size, resampled_epoch
from sweeps.engine.config import NetConfig
from sweeps.engine.train import train_folds
from sweeps.engine.weights import class_weights

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


@pytest.mark.parametrize("resampling", ["over", "under"])
def test_a_resampled_epoch_is_balanced_and_drawn_from_the_folds_real_training_rows(resampling):
    folds = imbalanced_noise_folds()
    per_fold = [class_rows(folds, f) for f in range(folds.k)]
    per_class = epoch_class_size(resampling, folds.split_class_counts)
    counts = [[len(rows) for rows in fold] for fold in per_fold]
    assert folds.split_class_counts.tolist() == counts
    assert folds.select([1]).split_class_counts.tolist() == counts  # sized alike alone and in the stack
    assert per_class == (min(max(c) for c in counts) if resampling == "over" else min(min(c) for c in counts))
    for f in range(folds.k):
        epoch = resampled_epoch(per_fold[f], per_class, torch.Generator().manual_seed(f))
        y = folds.y_train[f][epoch]
        assert torch.bincount(y, minlength=2).tolist() == [per_class, per_class]  # balanced, exactly
        assert folds.train_weight[f][epoch].all()  # real rows only, never the fold's top-up repeats
        minority, majority = per_fold[f][1], per_fold[f][0]
        if resampling == "over":  # every minority row at least once, repeats only to fill
            assert set(minority.tolist()) <= set(epoch.tolist())
        else:  # a subset of the majority, no row twice
            assert len(set(epoch.tolist())) == len(epoch) and len(majority) > per_class


def test_over_sampling_keeps_every_minority_row_even_near_balance():
    # 95 minority rows topped up to 100: a draw with replacement would miss about a third of
    # them in every epoch; the rule is every row once, then repeats only to fill.
    majority, minority = torch.arange(100), torch.arange(100, 195)
    for seed in range(20):
        epoch = resampled_epoch([majority, minority], 100, torch.Generator().manual_seed(seed))
        counts = torch.bincount(epoch, minlength=195)
        assert (counts[100:] >= 1).all() and counts[100:].sum() == 100 and (counts[:100] == 1).all()


def test_resampling_never_touches_validation_rows(monkeypatch):
    folds = imbalanced_noise_folds()
    drawn = []

    def spy(rows_by_class, per_class, generator):
        epoch = resampled_epoch(rows_by_class, per_class, generator)
        drawn.append((sum(map(len, rows_by_class)), epoch))
        return epoch

    monkeypatch.setattr(sweeps.engine.batches, "resampled_epoch", spy)
    config = NetConfig(1, 8, 0.0, 1e-2, 1e-2, resampling="over", balanced_validation=True)
    result = train_folds(folds, config, max_epochs=3, patience=None, seed=0)
    assert len(drawn) == 3 * folds.k  # every fold, every epoch
    for (_, epoch), f in zip(drawn, [f for _ in range(3) for f in range(folds.k)]):
        used = folds.train_rows[f][epoch.numpy()]  # dataset rows this fold trained on
        assert not set(used.tolist()) & set(folds.val_rows[f].tolist())
    # Validation scores every validation row once, class-balanced, as without re-sampling.
    model = result.model
    for f in range(folds.k):
        x, y, w = folds.X_val[f:f + 1], folds.y_val[f:f + 1], folds.val_weight[f:f + 1]
        losses = torch.nn.functional.cross_entropy(model.select(torch.tensor([f])).forward(x)[0][0], y[0],
                                                   reduction="none")
        weight = w[0] * class_weights(folds)[f][y[0]]
        assert result.val_losses[f] == pytest.approx(float((losses * weight).sum() / weight.sum()), rel=1e-5)


def test_oversampling_gives_the_minority_its_share_like_balanced_weights():
    folds = imbalanced_noise_folds()
    same = dict(max_epochs=15, patience=None, seed=0)
    over = train_folds(folds, NetConfig(1, 8, 0.0, 1e-2, 1e-2, resampling="over"), **same)
    under = train_folds(folds, NetConfig(1, 8, 0.0, 1e-2, 1e-2, resampling="under"), **same)
    # Unweighted and unsampled the net learns the prior (~0.06, the test above); trained on
    # balanced epochs, its minority probability on unseen rows moves toward 0.5: ~0.42 under-
    # sampled, ~0.25 over-sampled (the repeated minority rows are partly memorised instead).
    assert minority_probability(over, folds) > 0.15
    assert minority_probability(under, folds) > 0.3
    # An epoch is as long as its balanced draw: 2 x the majority, or 2 x the minority.
    assert len(over.curve_train) == len(under.curve_train) == 15


def test_resampling_is_searchable_recorded_and_scored_class_balanced(tmp_path):
    space = Space(depth=1, width=16, lr=(3e-3, 1e-2), resampling=Categorical(["none", "over", "under"]))
    X, digit = load_digits(return_X_y=True)
    y = (digit == 0).astype(int)  # a 10 % minority
    spec = digits_study(data=(X, y), space=space, n_trials=4, max_epochs=3)
    assert spec.balanced_validation and spec.settings["validation"] == "class-balanced"
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = run_study(spec, load_dataset(spec), storage=url, progress=False, out=io.StringIO())
    assert {t.params["resampling"] for t in study.trials} <= {"none", "over", "under"}
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    # The default final model retrains the best trial's fold-models and checks that they reach
    # its recorded (class-balanced) CV loss: retrained and scored as in the sweep.
    entry, model = evaluate_study(spec, load_dataset(spec), storage=url, model_path=str(tmp_path / "m.pt"), err=io.StringIO())
    assert model.info["final_model"] == "folds" and entry["balanced_accuracy"] > 0.9
    assert not digits_study().balanced_validation  # off unless the space balances
    with pytest.raises(SweepsError, match=r"Space.resampling: re-sampling balances classes, and a regression"):
        digits_study(task="regression", space=Space(resampling="over"))
    with pytest.raises(SweepsError, match=r"Space.resampling: choices are 'none', 'over', 'under'"):
        Space(resampling="smote")


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
    evaluate_study(spec, dataset, storage=url, model_path=str(folder / "source.pt"),
                   err=io.StringIO())
    return folder / "source.pt"


def test_transfer_starts_every_fold_from_the_saved_model(source_model):
    source = sweeps.load_model(source_model).net
    folds = make_folds(load_dataset(diabetes_spec()), 3, 0)
    result = train_folds(folds, NetConfig(2, 16, 0.0, 0.0, 1e-9), max_epochs=1, patience=None, seed=5, init=source)
    for trained, start in zip(result.model.weights, source.weights):
        torch.testing.assert_close(trained, start.expand_as(trained), rtol=0, atol=1e-6)  # lr ~ 0: unchanged


def test_feature_extraction_keeps_the_first_layers_as_loaded(source_model):
    source = sweeps.load_model(source_model).net
    folds = make_folds(load_dataset(diabetes_spec()), 3, 0)
    # Weight decay and clipping on: a frozen tensor must not be decayed or counted either.
    config = NetConfig(2, 16, 0.1, 1e-2, 1e-2, freeze=1, grad_clip=0.5)
    result = train_folds(folds, config, max_epochs=3, patience=None, seed=5, init=source)
    trained, start = result.model, source
    torch.testing.assert_close(trained.weights[0], start.weights[0].expand_as(trained.weights[0]), rtol=0, atol=0)
    torch.testing.assert_close(trained.biases[0], start.biases[0].expand_as(trained.biases[0]), rtol=0, atol=0)
    for later in (1, 2):  # the second hidden layer and the output layer learn
        assert not torch.allclose(trained.weights[later], start.weights[later].expand_as(trained.weights[later]))
    frozen_all = train_folds(folds, dataclasses.replace(config, freeze=2), max_epochs=3, patience=None, seed=5,
                             init=source)
    torch.testing.assert_close(frozen_all.model.weights[1], start.weights[1].expand_as(frozen_all.model.weights[1]),
                               rtol=0, atol=0)
    with pytest.raises(ValueError, match="freeze keeps loaded layers; it needs `init`"):
        train_folds(folds, config, max_epochs=1, patience=None, seed=5)


def test_freeze_is_searchable_with_init_from_and_refused_without(source_model, tmp_path):
    spec = diabetes_spec(name="extract", init_from=str(source_model),
                         space=Space(lr=(1e-3, 1e-2), batch_size=32, freeze=(0, 2)), n_trials=4, max_epochs=4)
    study = run_study(spec, load_dataset(spec), storage=f"sqlite:///{tmp_path / 'e.db'}", progress=False,
                      out=io.StringIO())
    assert {t.params["freeze"] for t in study.trials} <= {0, 1, 2} and len(study.trials) == 4
    with pytest.raises(SweepsError, match=r"Space.freeze: keeps the first layers of a loaded model .*init_from"):
        diabetes_spec(space=Space(freeze=1))
    too_deep = diabetes_spec(name="too-deep", init_from=str(source_model), space=Space(freeze=(0, 3)))
    url = tmp_path / "never.db"
    with pytest.raises(SweepsError, match=r"has 2 hidden layer\(s\); freeze at most 2 .* got 3"):
        run_study(too_deep, load_dataset(too_deep), storage=f"sqlite:///{url}", progress=False, out=io.StringIO())
    assert not url.exists()


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


def test_transfer_reads_the_saved_model_s_columns_by_name(tmp_path):
    frame = load_diabetes(as_frame=True).frame
    X, y = frame.drop(columns="target"), frame["target"]
    spec = diabetes_spec(name="named", data=(X, y), n_trials=1, max_epochs=3)
    url = f"sqlite:///{tmp_path / 'n.db'}"
    run_study(spec, load_dataset(spec), storage=url, progress=False, out=io.StringIO())
    evaluate_study(spec, load_dataset(spec), storage=url, model_path=str(tmp_path / "named.pt"),
                   err=io.StringIO())
    reordered = diabetes_spec(name="reordered", data=(X[list(reversed(X.columns))], y),
                              init_from=str(tmp_path / "named.pt"))
    never = tmp_path / "never.db"
    with pytest.raises(SweepsError, match=r"was trained on columns \['age', 'sex'.* put the data's columns in the "
                                          r"model's order"):
        run_study(reordered, load_dataset(reordered), storage=f"sqlite:///{never}", progress=False, out=io.StringIO())
    renamed = diabetes_spec(name="renamed", data=(X.rename(columns={"age": "years"}), y),
                            init_from=str(tmp_path / "named.pt"))
    with pytest.raises(SweepsError, match=r"transfer needs the same features, named alike"):
        run_study(renamed, load_dataset(renamed), storage=f"sqlite:///{never}", progress=False, out=io.StringIO())
    assert not never.exists()

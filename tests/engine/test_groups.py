"""Per-source monitoring: Study(groups=) records each group's validation loss and metric, and
early_stopping="worst_group" stops folds on (and scores trials by) their worst group."""

from __future__ import annotations

import io

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
from optuna_dashboard import get_note
from sklearn.datasets import load_digits

from sweeps import Space, SweepsError
from sweeps.data.dataset import load_dataset
from sweeps.results.diagnose import diagnose_study
from sweeps.results.evaluate import evaluate_study
from sweeps.data.folds import make_folds
from sweeps.sweep.optimize import run_study
from sweeps.engine.config import NetConfig
from sweeps.engine.scores import group_means
from sweeps.engine.train import train_folds

from conftest import digits_study

X, DIGIT = load_digits(return_X_y=True)
# Three sources of unequal difficulty: digits 0-2, 3-6 and 7-9.
SOURCE = np.where(DIGIT < 3, "a", np.where(DIGIT < 7, "b", "c"))


def grouped(**changes):
    return digits_study(data=(X, DIGIT), groups=SOURCE, **changes)


def test_group_means_match_numpy():
    rng = np.random.default_rng(0)
    values, weight = rng.random((2, 50)), (rng.random((2, 50)) < 0.9).astype(float)
    groups = rng.integers(-1, 3, (2, 50))
    groups[1][groups[1] == 2] = 0  # position 1 has no row of group 2
    ours = group_means(torch.tensor(values), torch.tensor(weight), torch.tensor(groups), 3).numpy()
    for p in range(2):
        for g in range(3):
            rows = (groups[p] == g) & (weight[p] > 0)
            expected = values[p][rows].mean() if rows.any() else np.nan
            np.testing.assert_allclose(ours[p, g], expected, rtol=1e-6, equal_nan=True)


def test_each_folds_group_losses_and_metrics_are_those_of_its_rows():
    folds = make_folds(load_dataset(grouped()), 3, 0)
    assert folds.group_names == ("a", "b", "c")
    result = train_folds(folds, NetConfig(1, 32, 0.0, 1e-4, 3e-3), max_epochs=5, patience=3, seed=0)
    for f in range(3):
        real = folds.val_weight[f].bool()
        x, y, g = folds.X_val[f][real], folds.y_val[f][real], folds.val_groups[f][real]
        out = result.model.select(torch.tensor([f])).forward(x.unsqueeze(0))[0][0]
        losses = torch.nn.functional.cross_entropy(out, y, reduction="none")
        rows = folds.val_rows[f]
        np.testing.assert_array_equal(np.array(folds.group_names)[g.numpy()], SOURCE[rows])  # rows keep their source
        for code in range(3):
            mine = g == code
            assert result.group_val_losses[f][code] == pytest.approx(float(losses[mine].mean()), rel=1e-5)
            accuracy = float((out[mine].argmax(-1) == y[mine]).float().mean())
            assert result.group_metrics[f][code] == pytest.approx(accuracy, abs=1e-6)
    assert len(result.group_curve_val) == len(result.curve_val)


def test_worst_group_early_stopping_scores_by_the_worst_group():
    folds = make_folds(load_dataset(grouped()), 3, 0)
    same = dict(max_epochs=25, patience=2, seed=1)
    mean = train_folds(folds, NetConfig(1, 32, 0.0, 1e-4, 3e-2), **same)
    worst = train_folds(folds, NetConfig(1, 32, 0.0, 1e-4, 3e-2, worst_group=True), **same)
    for f in range(3):  # each fold's value is its worst group's loss at its best weights
        assert worst.val_losses[f] == pytest.approx(max(worst.group_val_losses[f]), rel=1e-6)
        assert mean.val_losses[f] < max(mean.group_val_losses[f])  # the mean hides the worst group
    # Training is the same until a fold stops; what it stops on differs.
    assert worst.curve_train[:2] == mean.curve_train[:2]
    assert worst.cv_loss > mean.cv_loss


def test_a_grouped_sweep_records_notes_and_diagnoses_per_group(tmp_path):
    spec = grouped(space=Space(depth=1, width=(16, 32), lr=(3e-3, 1e-2)), n_trials=2, max_epochs=6,
                   early_stopping="worst_group")
    url = f"sqlite:///{tmp_path / 's.db'}"
    dataset = load_dataset(spec)
    study = run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    assert study.user_attrs["settings"]["validation"] == "plain, worst group"
    for trial in study.trials:
        attrs = trial.user_attrs
        assert set(attrs["group_val_loss"]) == {"a", "b", "c"} and set(attrs["group_metric"]) == {"a", "b", "c"}
        assert attrs["worst_group"] == max(attrs["group_val_loss"], key=attrs["group_val_loss"].get)
        assert attrs["group_spread"] == pytest.approx(max(attrs["group_val_loss"].values())
                                                      - min(attrs["group_val_loss"].values()), abs=1e-4)
        assert len(attrs["fold_group_val_losses"]) == 3 and len(attrs["group_curve_val"]["a"]) == attrs["epochs"]
        note = get_note(optuna.trial.Trial(study, trial._trial_id))  # as optuna-dashboard reads it
        assert "| group | validation loss | accuracy |" in note
    # evaluate retrains the chosen fold-models scored the same way (its CV-loss check), then diagnose
    evaluate_study(spec, dataset, storage=url, model_path=str(tmp_path / "m.pt"),
                   err=io.StringIO())
    report = diagnose_study(spec, dataset, storage=url).report
    assert f"## Per group: the best trial's worst is '{study.best_trial.user_attrs['worst_group']}'" in report


def test_groups_from_a_table_column_reach_the_test_rows_too():
    frame = pd.DataFrame(X[:, :8], columns=[f"p{i}" for i in range(8)]).assign(source=SOURCE)
    spec = digits_study(data=(frame.iloc[:1200], DIGIT[:1200]), test_data=(frame.iloc[1200:], DIGIT[1200:]),
                        groups="source")
    dataset = load_dataset(spec)
    assert dataset.group_names == ("a", "b", "c")
    np.testing.assert_array_equal(np.array(dataset.group_names)[dataset.groups], SOURCE)
    assert "source" in dataset.X.columns  # the column stays a feature


@pytest.mark.parametrize("changes, message", [
    (dict(groups="source"), r"Study.groups: 'source' is not a column of the data table \(it returned an array"),
    (dict(groups=[1, 2, 3]), r"Study.groups: has 3 entries, data has 1797 rows"),
    (dict(groups=np.arange(1797)), r"Study.groups: 1797 distinct groups; at most 50"),
    (dict(groups=np.full(1797, None, dtype=object)), r"Study.groups: no row outside the held-out test set has a group"),
    (dict(groups=np.full(1797, np.nan)), r"every row outside the held-out test set with a group is in 'missing'"),
    (dict(groups=np.where(np.arange(1797) < 900, "a", None)), r"with a group is in 'a'; monitoring per group needs"),
])
def test_bad_groups_are_one_line(changes, message):
    with pytest.raises(SweepsError, match=message):
        load_dataset(digits_study(**changes))


def test_groups_on_fewer_rows_than_folds_are_refused():
    dev = load_dataset(digits_study()).dev
    groups = np.full(1797, None, dtype=object)
    groups[dev[:2]] = ["a", "b"]
    with pytest.raises(SweepsError, match=r"only 2 row\(s\) outside the held-out test set have a group, fewer "
                                          r"than folds=3"):
        load_dataset(digits_study(groups=groups))


def test_degenerate_groups_are_refused_by_the_command_before_anything_is_written(tmp_path, monkeypatch, capsys):
    from sweeps.run import main as run_main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "g.py").write_text(
        "import numpy as np\nfrom sklearn.datasets import load_digits\nfrom sweeps import Study, Space\n"
        "X, y = load_digits(return_X_y=True)\n"
        "study = Study(name='g', task='classification', data=(X, y), groups=np.full(len(y), None, dtype=object),\n"
        "              space=Space(depth=1, width=16), folds=3, max_epochs=2, n_trials=1)\n")
    assert run_main([str(tmp_path / "g.py"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "Study.groups: no row outside the held-out test set has a group" in err and err.count("\n") == 1
    assert not (tmp_path / "storage").exists()


def test_worst_group_needs_groups_and_early_stopping_takes_two_values():
    with pytest.raises(SweepsError, match=r"early_stopping='worst_group': needs Study\(groups=...\)"):
        digits_study(early_stopping="worst_group")
    with pytest.raises(SweepsError, match=r"Study.early_stopping: must be 'mean' or 'worst_group'"):
        digits_study(groups=SOURCE, early_stopping="min")
    assert digits_study(groups=SOURCE).settings == digits_study().settings  # monitoring alone changes no value

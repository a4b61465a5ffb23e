"""Study files and the search space: parsing, natural scales, and clear errors."""

from __future__ import annotations

import textwrap

import optuna
import pytest

from sweeps import Categorical, Float, Int, Space, Study, SweepsError
from sweeps.spec.study import load_study_file

from conftest import digits_study


def test_plain_tuples_take_natural_scales():
    space = Space(depth=(1, 4), width=(16, 512), dropout=(0.0, 0.5), weight_decay=(1e-6, 1e-1), lr=(1e-4, 1e-1))
    assert space.depth == Int(1, 4, log=False)
    assert space.width == Int(16, 512, log=True)
    assert space.dropout == Float(0.0, 0.5, log=False)
    assert space.weight_decay == Float(1e-6, 1e-1, log=True)
    assert space.lr == Float(1e-4, 1e-1, log=True)
    assert space.batch_size == Int(128, 128)  # a single value is fixed


def test_space_suggests_every_parameter_within_its_range():
    space = Space(depth=(1, 3), width=2, dropout=Categorical([0.0, 0.25]), lr=(1e-3, 1e-2))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        params = space.suggest(study.ask())
        assert 1 <= params["depth"] <= 3 and params["width"] == 2
        assert params["dropout"] in (0.0, 0.25) and 1e-3 <= params["lr"] <= 1e-2


@pytest.mark.parametrize("kwargs, message", [
    (dict(lr=(0.1, 0.001)), r"Space.lr: low <= high must hold, but got \(low=0.1, high=0.001\); swap the bounds"),
    (dict(weight_decay=(0.0, 0.1)), r"Space.weight_decay: a log-scale range needs low > 0"),
    (dict(lr=Float(-1.0, 0.1, log=True)), r"Space.lr: lr >= 1e-12 must hold, got -1.0"),
    (dict(width=(0, 8)), r"Space.width: width >= 1 must hold, got 0"),  # not "use a low such as 1e-6"
    (dict(width=Float(8.0, 32.0)), r"Space.width: takes whole numbers; write Int\(8.0, 32.0\)"),
    (dict(depth=Float(1, 3)), r"Space.depth: takes whole numbers"),
    (dict(lr=Int(1, 3)), r"Space.lr: takes any real number; write Float\(1, 3\)"),
    (dict(dropout=(0.0, 1.0)), r"Space.dropout: 0 <= dropout < 1 must hold"),
    (dict(depth=(0, 3)), r"Space.depth: depth >= 1 must hold"),
    (dict(width=(1.5, 8)), r"Space.width: takes whole numbers"),
    (dict(depth="deep"), r"Space.depth: expected a \(low, high\) tuple"),
    (dict(huber=-1.0), r"Space.huber: huber >= 0 must hold"),
])
def test_impossible_ranges_are_named(kwargs, message):
    with pytest.raises(SweepsError, match=message):
        Space(**kwargs)


@pytest.mark.parametrize("changes, message", [
    (dict(task="clustering"), r"Study.task: must be 'classification' or 'regression', got 'clustering'"),
    (dict(folds=1), r"Study.folds: must be an integer >= 2"),
    (dict(test_size=1.5), r"Study.test_size: must be a fraction"),
    (dict(name="a/b"), r"Study.name"),
    (dict(name="%2E%2E%2F%2E%2E%2Ftmp%2Fx"), r"Study.name: .* may hold only letters, digits"),
    (dict(name="x?mode=ro"), r"Study.name"),
    (dict(name="a:b"), r"Study.name"),
    (dict(seed=2**32), r"Study.seed: must be below 2\*\*32"),
    (dict(timeout=float("nan")), r"Study.timeout: must be a positive number"),
    (dict(space=(1, 2)), r"Study.space: must be a Space"),
    (dict(pruner="median"), r"Study.pruner: must be an Optuna pruner"),
    (dict(space=Space(huber=(0.5, 2.0))), r"Space.huber: the Huber loss is a regression loss"),
])
def test_invalid_study_fields_are_named(changes, message):
    with pytest.raises(SweepsError, match=message):
        digits_study(**changes)


def test_study_is_keyword_only_and_frozen():
    with pytest.raises(TypeError):
        Study("digits", "classification", None)  # noqa
    spec = digits_study()
    with pytest.raises(Exception):
        spec.folds = 10


def test_space_function_for_conditional_spaces():
    def space(trial):
        depth = trial.suggest_int("depth", 1, 2)
        return {"depth": depth, "width": 8 * depth, "dropout": 0.0, "weight_decay": 1e-4,
                "lr": trial.suggest_float("lr", 1e-3, 1e-2, log=True)}

    spec = digits_study(space=space)
    params = spec.suggest(optuna.create_study().ask())
    assert params["width"] == 8 * params["depth"] and params["batch_size"] == 128


def test_space_function_returning_bad_dict_is_named():
    spec = digits_study(space=lambda trial: {"depth": 1})
    with pytest.raises(SweepsError, match=r"missing parameter\(s\)"):
        spec.suggest(optuna.create_study().ask())
    frozen = digits_study(space=lambda trial: {"depth": 1, "width": 8, "dropout": 0.0, "weight_decay": 0.0,
                                               "lr": 1e-3, "freeze": 1})
    with pytest.raises(SweepsError, match=r"freeze keeps the first layers of a loaded model"):
        frozen.suggest(optuna.create_study().ask())


def write(tmp_path, text, name="s.py"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_load_study_file(tmp_path):
    path = write(tmp_path, """
        from sklearn.datasets import load_digits
        from sweeps import Study, Space
        study = Study(name="x", task="classification", data=lambda: load_digits(return_X_y=True),
                      space=Space(depth=(1, 2)))
    """)
    spec = load_study_file(path)
    assert spec.name == "x" and spec.space.depth == Int(1, 2)


@pytest.mark.parametrize("text, message", [
    ("x = 1\n", r"declares no Study; add `study = Study\("),
    ("def f(:\n", r"s.py:1: syntax error"),
    ("import numpy\nraise ValueError('boom')\n", r"s.py:2: ValueError: boom; fix the study file"),
    ("from sweeps import Study, Space\nstudy = Study(name='x', task='classification', data=1, "
     "space=Space(lr=(1, 0.1)))\n", r"s.py: Space.lr: low <= high must hold"),
])
def test_broken_study_files_are_named(tmp_path, text, message):
    with pytest.raises(SweepsError, match=message):
        load_study_file(write(tmp_path, text))


def test_missing_study_file(tmp_path):
    with pytest.raises(SweepsError, match=r"no such study file"):
        load_study_file(tmp_path / "nope.py")

"""Saved models: safetensors + JSON, reloaded exactly; a file that could run code is refused."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import sweeps
from sweeps import SweepsError
from sweeps.data.folds import fit_preprocessing
from sweeps.engine.model import StackedMLP
from sweeps.engine.trained import TrainedModel

from conftest import edited


class Payload:
    """Unpickling this runs `touch` of a marker file: what a hostile model file would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.fixture
def model(digits_dataset):
    prep = fit_preprocessing(digits_dataset, digits_dataset.dev)
    net = StackedMLP.init([1, 2], 64, 10, depth=2, width=16)
    return TrainedModel("classification", {"depth": 2, "width": 16}, [prep], net, [0, 0],
                        list(range(10)), {"study": "t"})


def test_a_saved_model_reloads_exactly_and_averages_its_members(model, digits_dataset, tmp_path):
    X = digits_dataset.X[digits_dataset.test]
    path = model.save(tmp_path / "m.pt")
    again = sweeps.load_model(path)
    np.testing.assert_array_equal(again.predict_proba(X), model.predict_proba(X))
    members = torch.softmax(model.member_outputs(X), -1)  # [2, rows, classes]
    np.testing.assert_allclose(model.predict_proba(X), members.mean(0).numpy(), rtol=1e-5, atol=1e-7)
    assert again.info == {"study": "t"} and again.n_members == 2


@pytest.mark.parametrize("save", [
    lambda path, payload: torch.save({"format": "sweeps-model-1", "pipeline": pickle.dumps(payload)}, path),
    lambda path, payload: path.write_bytes(pickle.dumps({"weights": payload})),
])
def test_a_file_that_would_run_code_is_refused_and_runs_nothing(tmp_path, save):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    save(path, Payload(marker))
    with pytest.raises(SweepsError, match=r"pickle-based file .* opening it could run code, so sweeps refuses it"):
        sweeps.load_model(path)
    assert not marker.exists()


@pytest.mark.parametrize("metadata, message", [
    ({"format": "sweeps-model-2", "model": "{not json"}, r"not a sweeps model file, or a damaged one \(JSONDecodeError"),
    ({"format": "something-else"}, r"not a sweeps model file"),
    ({"format": "sweeps-model-2", "model": json.dumps({"task": "classification"})}, r"not a sweeps model file"),
])
def test_foreign_or_damaged_safetensors_files_are_one_line(tmp_path, metadata, message):
    path = tmp_path / "m.safetensors"
    save_file({"x": torch.zeros(2)}, str(path), metadata=metadata)
    with pytest.raises(SweepsError, match=message):
        sweeps.load_model(path)
    path.write_bytes(b"\x00" * 16)
    with pytest.raises(SweepsError, match="not a sweeps model file"):
        sweeps.load_model(path)


def test_saving_is_atomic(model, tmp_path, monkeypatch):
    import os

    path = tmp_path / "m.pt"
    model.save(path)
    before = path.read_bytes()

    def crash(*args, **kwargs):  # the disk fills while the bytes go down
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError) as raised:
        model.save(path)
    assert raised.value.errno == 28  # an OSError with its errno, which the sweep tells apart
    assert path.read_bytes() == before  # the old model is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt"]  # no half-written file


def test_a_loaded_model_is_a_fitted_scikit_learn_estimator(tmp_path):
    from sklearn.base import is_classifier, is_regressor
    from sklearn.datasets import load_diabetes, load_digits
    from sklearn.inspection import permutation_importance
    from sklearn.metrics import accuracy_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer
    from sklearn.utils.validation import check_is_fitted

    X, y = load_digits(return_X_y=True)
    prep = fit_preprocessing(__import__("sweeps.data.dataset", fromlist=["x"]).Dataset(
        X.astype("float32"), y, np.arange(10), np.arange(len(y)), np.arange(0), "", ""), np.arange(len(y)))
    model = TrainedModel("classification", {}, [prep], StackedMLP.init([0], 64, 10, depth=1, width=16), None,
                         list(range(10)))
    path = model.save(tmp_path / "m.pt")
    model = sweeps.load_model(path)
    check_is_fitted(model)
    assert is_classifier(model) and not is_regressor(model)
    assert list(model.classes_) == list(range(10)) and model.n_features_in_ == 64
    assert model.score(X[:200], y[:200]) == pytest.approx(accuracy_score(y[:200], model.predict(X[:200])))
    result = permutation_importance(model, X[:200], y[:200], n_repeats=2, random_state=0)
    assert result.importances_mean.shape == (64,)
    pipeline = make_pipeline(FunctionTransformer(lambda a: a), model)  # a fitted pipeline ending in it
    np.testing.assert_array_equal(pipeline.predict(X[:50]), model.predict(X[:50]))
    with pytest.raises(SweepsError, match="trained by python -m sweeps.evaluate"):
        model.fit(X, y)
    Xr, yr = load_diabetes(return_X_y=True)
    from sweeps.data.preprocess import Preprocessing

    regressor = TrainedModel("regression", {}, [Preprocessing.fit(Xr, yr)],
                             StackedMLP.init([0], 10, 1, depth=1, width=8), None, None)
    assert is_regressor(regressor) and -5 < regressor.score(Xr, yr) < 1
    with pytest.raises(AttributeError):
        regressor.classes_


@pytest.mark.parametrize("change, message", [
    (lambda h, t: h.update(classes=[0, 1, 2]), r"10 outputs, but classes \[0, 1, 2\]"),
    (lambda h, t: h.update(classes=[0] * 10), r"10 outputs, but classes"),
    (lambda h, t: h.update(member_preprocessing=[0, 5]), r"member_preprocessing \[0, 5\]"),
    (lambda h, t: h.update(member_preprocessing=[0]), r"member_preprocessing \[0\] for 2 members"),
    (lambda h, t: h.update(task="clustering"), r"task 'clustering'"),
    (lambda h, t: h["preprocessings"][0].update(scaling="magic"), r"unknown scaling 'magic'"),
    (lambda h, t: h["net"].update(dropout=1.5), r"dropout 1.5"),
    (lambda h, t: t["net.w1"].fill_(float("nan")), r"non-finite weights"),
    (lambda h, t: t.update({"net.w1": t["net.w1"][:, :3].contiguous()}), r"layer shapes do not chain"),
    (lambda h, t: t.update({"preprocessing.0.scale": torch.zeros(64, dtype=torch.float64)}),
     r"scale non-zero"),
    (lambda h, t: t.update({"preprocessing.0.center": torch.zeros(3, dtype=torch.float64)}),
     r"center, scale and fill must be 3 finite numbers"),
    (lambda h, t: h.update(columns=["a"] * 64), r"columns must be distinct names"),
])
def test_a_hand_edited_model_file_is_refused_in_one_line(model, tmp_path, change, message):
    path = edited(model, tmp_path, change)
    with pytest.raises(SweepsError, match=rf"not a sweeps model file, or a damaged one \(ValueError: .*{message}"):
        sweeps.load_model(path)


def test_a_device_that_is_not_there_is_one_line(model, tmp_path):
    path = model.save(tmp_path / "m.pt")
    if not torch.cuda.is_available():
        with pytest.raises(SweepsError, match=r"device 'cuda': no CUDA device is available here; use device='cpu'"):
            sweeps.load_model(path, device="cuda")
    with pytest.raises(SweepsError, match=r"device 'gpu0' is not a device"):
        sweeps.load_model(path, device="gpu0")

"""`python -m sweeps.export --model onnx`: the saved model as ONNX, predicting what load_model predicts."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits

import sweeps
from sweeps.data.dataset import load_dataset
from sweeps.results.evaluate import evaluate_study
from sweeps.export import main as export_main
from sweeps.results.onnx import parity_gap
from sweeps.sweep.optimize import run_study

from conftest import edited

onnxruntime = pytest.importorskip("onnxruntime")

STUDY = """
from sklearn.datasets import {loader}
from sweeps import Space, Study
study = Study(name="onnx", task={task!r}, data=lambda: {loader}(return_X_y=True),
              space=Space(depth=2, width=16, lr=5e-3, embedding={embedding!r}), folds=3, max_epochs=4, patience=3,
              n_trials=1, preprocessing={scaling!r})
"""


@pytest.mark.parametrize("loader, task, scaling, embedding", [
    ("load_diabetes", "regression", "auto", "periodic"),  # 10 numeric columns: quantile and standard scaling
    ("load_digits", "classification", "robust", "none"),
])
def test_the_onnx_graph_predicts_what_load_model_predicts(tmp_path, monkeypatch, capsys, loader, task, scaling,
                                                          embedding):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.py").write_text(STUDY.format(loader=loader, task=task, scaling=scaling, embedding=embedding))
    spec = sweeps.spec.study.load_study_file(tmp_path / "s.py")
    dataset = load_dataset(spec)
    url = "sqlite:///storage/onnx.db"
    run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    evaluate_study(spec, dataset, storage=url, err=io.StringIO())  # 3 fold-models
    assert export_main([str(tmp_path / "s.py"), "--model", "onnx"]) == 0
    assert "onnxruntime agrees with load_model" in capsys.readouterr().out
    model = sweeps.load_model(tmp_path / "storage" / "onnx-model.pt")
    session = onnxruntime.InferenceSession(str(tmp_path / "storage" / "onnx.onnx"), providers=["CPUExecutionProvider"])
    X = (load_diabetes if task == "regression" else load_digits)(return_X_y=True)[0][dataset.test]
    ours = model.predict(X) if task == "regression" else model.predict_proba(X)
    theirs = session.run(None, {"numeric": X.astype(np.float32)})[0]
    assert parity_gap(model, theirs, ours) <= 1e-5  # probabilities, or target standard deviations
    meta = session.get_modelmeta().custom_metadata_map
    assert meta["task"] == task and meta["members"] == "3"
    if task == "classification":  # a hand-edited file is refused before any graph is built
        edited(model, tmp_path / "storage", lambda h, t: h.update(member_preprocessing=[0, 1, 7]))
        (tmp_path / "storage" / "onnx.onnx").unlink()
        assert export_main([str(tmp_path / "s.py"), "--model", "onnx", "--model-file", "storage/m.pt"]) == 2
        err = capsys.readouterr().err
        assert "member_preprocessing [0, 1, 7]" in err and err.count("\n") == 1
        assert not (tmp_path / "storage" / "onnx.onnx").exists()


@pytest.mark.parametrize("category_dim, numeric", [(0, True), (4, True), (0, False)],
                         ids=["one-hot", "category-embeddings", "text-only"])
def test_text_columns_are_encoded_inside_the_graph(tmp_path, monkeypatch, capsys, category_dim, numeric):
    import pandas as pd

    monkeypatch.chdir(tmp_path)
    X, y = load_digits(return_X_y=True)
    rng = np.random.default_rng(0)
    colour = np.where(y % 2, "red", "blue").astype(object)
    colour[rng.choice(len(y), 60, replace=False)] = None  # missing: imputed per fold
    shade = np.array([f"s{i}" for i in rng.integers(0, 60, len(y))], dtype=object)  # 60 levels: a shared column
    frame = pd.DataFrame(X[:, :5] if numeric else X[:, :0], columns=list("abcde" if numeric else ""))
    frame = frame.assign(colour=colour, shade=shade, y=y)
    frame.to_csv(tmp_path / "t.csv", index=False)
    (tmp_path / "s.py").write_text(
        "from sweeps import Space, Study, Table\n"
        "study = Study(name='cat', task='classification', data=Table('t.csv', target='y'), "
        f"space=Space(depth=1, width=8, lr=5e-3, category_dim={category_dim}), folds=3, max_epochs=2, n_trials=1)\n")
    spec = sweeps.spec.study.load_study_file(tmp_path / "s.py")
    dataset = load_dataset(spec)
    run_study(spec, dataset, progress=False, out=io.StringIO())
    evaluate_study(spec, dataset, err=io.StringIO())
    assert export_main([str(tmp_path / "s.py"), "--model", "onnx"]) == 0
    assert ("numeric and text columns in" if numeric else "text columns in") in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(tmp_path / "storage" / "cat.onnx"), providers=["CPUExecutionProvider"])
    model = sweeps.load_model(tmp_path / "storage" / "cat-model.pt")
    rows = dataset.rows(dataset.test).copy()
    rows.loc[rows.index[:5], "colour"] = "green"  # a category no fold saw
    rows.loc[rows.index[5:10], "shade"] = None  # missing
    meta = session.get_modelmeta().custom_metadata_map
    assert json.loads(meta["categorical_columns"]) == ["colour", "shade"]
    text = rows[["colour", "shade"]].astype(object).where(rows[["colour", "shade"]].notna(), "").to_numpy(dtype=str)
    feeds = {"categorical": text, **({"numeric": rows[list("abcde")].to_numpy(np.float32)} if numeric else {})}
    assert {i.name for i in session.get_inputs()} == set(feeds)
    theirs = session.run(None, feeds)[0]
    with pytest.warns(Warning, match="categor"):  # load_model says so; the graph treats them the same way
        ours = model.predict_proba(rows)
    assert parity_gap(model, theirs, ours) <= 1e-5


def test_a_graph_that_disagrees_with_load_model_is_never_written(tmp_path, monkeypatch):
    # The exporter checks onnxruntime against load_model on real rows before it keeps a file:
    # a graph one part in ten thousand off is refused, and nothing is left behind.
    from sweeps.results import onnx as exporter

    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.py").write_text(STUDY.format(loader="load_diabetes", task="regression", scaling="standard",
                                                embedding="periodic"))
    spec = sweeps.spec.study.load_study_file(tmp_path / "s.py")
    dataset = load_dataset(spec)
    run_study(spec, dataset, storage="sqlite:///storage/onnx.db", progress=False, out=io.StringIO())
    _, model = evaluate_study(spec, dataset, storage="sqlite:///storage/onnx.db", err=io.StringIO())
    honest = exporter._Served.forward
    monkeypatch.setattr(exporter._Served, "forward", lambda self, *inputs: honest(self, *inputs) * 1.0001)
    sample = dataset.rows(dataset.dev[:64])
    with pytest.raises(sweeps.SweepsError, match=r"onnxruntime's predictions differ from load_model's by .*nothing "
                                                 r"was written"):
        exporter.export_onnx(model, tmp_path / "m.onnx", sample)
    assert not list(tmp_path.glob("m.onnx*"))
    monkeypatch.setattr(exporter._Served, "forward", honest)
    assert exporter.export_onnx(model, tmp_path / "m.onnx", sample).is_file()  # the same, honest: written

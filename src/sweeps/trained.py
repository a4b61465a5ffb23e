"""A trained model as `evaluate` saves it: weights, preprocessing and configuration in one file.

    >>> import sweeps
    >>> model = sweeps.load_model("storage/digits-model.pt")   # doctest: +SKIP
    >>> model.predict(X)                                       # doctest: +SKIP

The file is a plain `torch.save` dict of tensors and Python values, loaded with
`weights_only=True`. A model trained on a `Table` also carries its fitted scikit-learn
preprocessing pipeline, pickled: like any pickle, load such a file only if you trust it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pickle

import numpy as np
import torch

from sweeps.errors import SweepsError
from sweeps.folds import Preprocessing
from sweeps.model import StackedMLP

FORMAT = "sweeps-model-1"


@dataclass
class TrainedModel:
    """One MLP and the preprocessing fitted with it, ready to predict raw feature rows."""

    task: str
    params: dict[str, Any]
    preprocessing: Preprocessing
    net: StackedMLP  # a stack of one
    classes: list | None = None
    info: dict[str, Any] = field(default_factory=dict)  # study name, fingerprint, test result...

    @property
    def n_features(self) -> int:
        pipeline = self.preprocessing.pipeline
        return pipeline.n_features_in_ if pipeline is not None else self.net.weights[0].shape[1]

    def outputs(self, X: Any) -> torch.Tensor:
        """Raw network outputs for raw feature rows: logits, or the standardized target."""
        X = self._check(X)
        x = torch.as_tensor(self.preprocessing.features(X), device=self.net.weights[0].device)
        with torch.no_grad():
            out, _ = self.net.forward(x.unsqueeze(0))
        return out[0]

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities `[rows, classes]`, columns in the order of `classes`."""
        if self.task != "classification":
            raise SweepsError("predict_proba: this is a regression model; use predict.")
        return torch.softmax(self.outputs(X), dim=-1).cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (classification) or target values in their own units (regression)."""
        out = self.outputs(X)
        if self.task == "classification":
            return np.asarray(self.classes)[out.argmax(-1).cpu().numpy()]
        p = self.preprocessing
        return out[:, 0].cpu().numpy() * p.y_std + p.y_mean

    def _check(self, X: Any) -> np.ndarray:
        pipeline = self.preprocessing.pipeline
        if pipeline is not None:
            expected = list(pipeline.feature_names_in_)
            missing = [c for c in expected if c not in getattr(X, "columns", [])]
            if missing:
                raise SweepsError(f"predict: X must be a table with the training columns; missing {missing}.")
            return X[expected]
        try:
            X = np.asarray(X, dtype=np.float32)
        except (TypeError, ValueError):
            raise SweepsError("predict: X must be numeric, like the training data.") from None
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise SweepsError(f"predict: X must have shape (rows, {self.n_features}), got {X.shape}.")
        if not np.isfinite(X).all():
            raise SweepsError("predict: X has NaN or infinite values; impute them first.")
        return X

    # --- file ----------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        p = self.preprocessing
        torch.save({
            "format": FORMAT,
            "task": self.task,
            "params": self.params,
            "classes": self.classes,
            "x_mean": None if p.x_mean is None else torch.as_tensor(p.x_mean),
            "x_scale": None if p.x_scale is None else torch.as_tensor(p.x_scale),
            "pipeline": None if p.pipeline is None else pickle.dumps(p.pipeline),
            "y_mean": p.y_mean, "y_std": p.y_std,
            "weights": [w.cpu() for w in self.net.weights],
            "biases": [b.cpu() for b in self.net.biases],
            "dropout": self.net.dropout,
            "info": self.info,
        }, path)
        return path


def load_model(path: str | Path, device: str = "cpu") -> TrainedModel:
    """Load a model saved by `python -m sweeps.evaluate`."""
    path = Path(path)
    if not path.is_file():
        raise SweepsError(f"{path}: no such model file; python -m sweeps.evaluate STUDY_FILE writes one.")
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as e:
        raise SweepsError(f"{path}: not a sweeps model file ({type(e).__name__}).") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise SweepsError(f"{path}: not a sweeps model file (expected format {FORMAT}).")
    pipeline = pickle.loads(state["pipeline"]) if state.get("pipeline") else None
    preprocessing = Preprocessing(
        None if state["x_mean"] is None else state["x_mean"].numpy(),
        None if state["x_scale"] is None else state["x_scale"].numpy(),
        float(state["y_mean"]), float(state["y_std"]), pipeline)
    net = StackedMLP(list(state["weights"]), list(state["biases"]), float(state["dropout"]))
    return TrainedModel(state["task"], state["params"], preprocessing, net, state["classes"], state["info"])

"""A trained model as `evaluate` saves it: networks, preprocessing and configuration in one file.

    >>> import sweeps
    >>> model = sweeps.load_model("storage/digits-model.pt")   # doctest: +SKIP
    >>> model.predict(X)                                       # doctest: +SKIP

The file is a safetensors file: named tensors, plus one JSON header that describes the
rest (task, classes, configuration, each member's preprocessing). Reading it parses JSON and
copies numbers; nothing in it is ever executed, so a model file from anyone is safe to open.
Files of the first format (a `torch.save` pickle that could carry a pickled scikit-learn
pipeline) are refused with the fix.

A model holds one or more members (a stack of networks): one refit, or the k fold-models
of a trial, each with the preprocessing fitted on its own rows. Predictions average the
members: class probabilities, or regression outputs in the target's units.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from sweeps.errors import SweepsError
from sweeps.model import StackedMLP
from sweeps.preprocess import Preprocessing

FORMAT = "sweeps-model-2"
_OLD_FORMAT_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")  # zip / pickle


@dataclass(repr=False)
class TrainedModel(BaseEstimator):
    """Stacked networks and the preprocessing fitted with each, ready to predict raw feature rows.

    A fitted scikit-learn estimator: `predict`, `predict_proba`, `score` (accuracy or R²),
    `classes_`, `n_features_in_` and, for tables, `feature_names_in_`; so
    `sklearn.metrics`, `sklearn.inspection.permutation_importance` and a fitted `Pipeline`
    use it as they use any classifier or regressor. It is trained by `sweeps.evaluate`, not
    by `fit`.
    """

    task: str
    params: dict[str, Any]
    preprocessings: list[Preprocessing]
    net: StackedMLP  # one member per stack position
    member_preprocessing: list[int] | None = None  # per member: its index in `preprocessings`
    classes: list | None = None
    info: dict[str, Any] = field(default_factory=dict)  # study name, fingerprint, test result...

    def __post_init__(self) -> None:
        if self.member_preprocessing is None:
            self.member_preprocessing = [0] * self.net.k

    def __repr__(self) -> str:
        kind = "classifier" if self.task == "classification" else "regressor"
        study = f" of study '{self.info['study']}'" if self.info.get("study") else ""
        return (f"sweeps.TrainedModel({kind}{study}, {self.n_members} member(s), "
                f"{self.info.get('final_model', 'refit')}, {self.n_features_in_} features)")

    # --- scikit-learn's fitted-estimator conventions ---------------------------------------
    def __sklearn_is_fitted__(self) -> bool:
        return True

    def __sklearn_tags__(self):
        from sklearn.utils import ClassifierTags, RegressorTags

        tags = super().__sklearn_tags__()
        if self.task == "classification":
            tags.estimator_type, tags.classifier_tags = "classifier", ClassifierTags()
        else:
            tags.estimator_type, tags.regressor_tags = "regressor", RegressorTags()
        return tags

    @property
    def classes_(self) -> np.ndarray:
        if self.task != "classification":
            raise AttributeError("classes_: a regression model has no classes")
        return np.asarray(self.classes)

    @property
    def n_features_in_(self) -> int:
        return self.n_features

    @property
    def feature_names_in_(self) -> np.ndarray:
        columns = self.preprocessing.columns
        if columns is None:
            raise AttributeError("feature_names_in_: the model was trained on an array, not a table")
        return np.asarray(columns, dtype=object)

    def fit(self, X: Any, y: Any = None) -> TrainedModel:
        raise SweepsError("a sweeps model is trained by python -m sweeps.evaluate (or sweeps.evaluate()), "
                          "not by fit; it is already fitted.")

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """Accuracy (classification) or R² (regression), as scikit-learn's mixins define it."""
        from sklearn.metrics import accuracy_score, r2_score

        metric = accuracy_score if self.task == "classification" else r2_score
        return float(metric(y, self.predict(X), sample_weight=sample_weight))

    @property
    def preprocessing(self) -> Preprocessing:
        """The first member's preprocessing (a refit has only one)."""
        return self.preprocessings[0]

    @property
    def n_members(self) -> int:
        return self.net.k

    @property
    def n_features(self) -> int:
        columns = self.preprocessing.columns
        return len(columns) if columns is not None else self.preprocessing.n_numeric

    def member_outputs(self, X: Any) -> torch.Tensor:
        """Raw outputs of every member `[members, rows, outputs]`: logits or standardized targets."""
        X = self._check(X)
        device = self.net.weights[0].device
        width = self.net.n_inputs  # fold-models whose encoders saw fewer categories get zero columns
        features = [torch.nn.functional.pad(torch.as_tensor(p.features(X), device=device),
                                            (0, width - p.n_features)) for p in self.preprocessings]
        x = torch.stack([features[i] for i in self.member_preprocessing])
        with torch.no_grad():
            return self.net.predict(x, classification=self.task == "classification")

    def log_proba(self, X: Any) -> torch.Tensor:
        """Log of the members' mean class probabilities `[rows, classes]` (classification)."""
        if self.task != "classification":
            raise SweepsError("log_proba: this is a regression model; use predict.")
        out = torch.log_softmax(self.member_outputs(X).double(), dim=-1)
        return torch.logsumexp(out, dim=0) - float(np.log(len(out)))

    def _target_units(self, out: torch.Tensor) -> torch.Tensor:
        """Mean over members of each member's prediction in the target's own units `[rows]`."""
        y_std = torch.tensor([self.preprocessings[i].y_std for i in self.member_preprocessing],
                             dtype=torch.float64, device=out.device)
        y_mean = torch.tensor([self.preprocessings[i].y_mean for i in self.member_preprocessing],
                              dtype=torch.float64, device=out.device)
        return (out[..., 0].double() * y_std[:, None] + y_mean[:, None]).mean(0)

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities `[rows, classes]`, columns in the order of `classes`."""
        if self.task != "classification":
            raise SweepsError("predict_proba: this is a regression model; use predict.")
        return self.log_proba(X).exp().float().cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        """Class labels (classification) or target values in their own units (regression)."""
        if self.task == "classification":
            return np.asarray(self.classes)[self.predict_proba(X).argmax(-1)]
        return self._target_units(self.member_outputs(X)).cpu().numpy()

    def _check(self, X: Any):
        columns = self.preprocessing.columns
        if columns is not None:
            missing = [c for c in columns if c not in getattr(X, "columns", [])]
            if missing:
                raise SweepsError(f"predict: X must be a table with the training columns; missing {missing}.")
            return X[columns]
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
        """Write the model as one safetensors file, atomically (a crash leaves no half file)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        net_meta, tensors = self.net.state()
        tensors = {f"net.{name}": t.detach().cpu().contiguous() for name, t in tensors.items()}
        preprocessing_meta = []
        for i, prep in enumerate(self.preprocessings):
            meta, arrays = prep.state()
            preprocessing_meta.append(meta)
            tensors.update({f"preprocessing.{i}.{name}": torch.from_numpy(np.ascontiguousarray(a))
                            for name, a in arrays.items()})
        header = {"task": self.task, "params": self.params, "classes": self.classes, "info": self.info,
                  "net": net_meta, "preprocessings": preprocessing_meta,
                  "member_preprocessing": self.member_preprocessing}
        partial = path.with_name(path.name + ".partial")
        try:
            save_file(tensors, str(partial), metadata={"format": FORMAT, "model": json.dumps(header)})
            os.replace(partial, path)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        return path


def load_model(path: str | Path, device: str = "cpu") -> TrainedModel:
    """Load a model saved by `python -m sweeps.evaluate`; nothing in the file is executed."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise SweepsError(f"{path}: no such model file; python -m sweeps.evaluate STUDY_FILE writes one.")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(_OLD_FORMAT_MAGIC):
        raise SweepsError(f"{path}: a pickle-based file (sweeps' first model format, or torch.save); "
                          "opening it could run code, so sweeps refuses it; save the model again with "
                          "python -m sweeps.evaluate STUDY_FILE.")
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if header.get("format") != FORMAT:
            raise ValueError(f"format {header.get('format')!r}")
        model = json.loads(header["model"])
        net = StackedMLP.from_state(model["net"], {k[4:]: v for k, v in tensors.items() if k.startswith("net.")})
        preprocessings = [
            Preprocessing.from_state(meta, {k.split(".", 2)[2]: v.cpu().numpy() for k, v in tensors.items()
                                            if k.startswith(f"preprocessing.{i}.")})
            for i, meta in enumerate(model["preprocessings"])]
        return TrainedModel(str(model["task"]), dict(model["params"]), preprocessings, net,
                            [int(i) for i in model["member_preprocessing"]], model["classes"], model["info"])
    except SweepsError:
        raise
    except Exception as e:  # a truncated, foreign or hand-edited file
        raise SweepsError(f"{path}: not a sweeps model file ({type(e).__name__}: {e}); "
                          "python -m sweeps.evaluate STUDY_FILE writes one.") from None

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
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.base import BaseEstimator

from sweeps.errors import SweepsError
from sweeps.engine.model import StackedMLP
from sweeps.data.preprocess import Preprocessing, category_strings
from sweeps.spec.options import SCALINGS

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
    # The training data's columns, in order, and how each was treated ("numeric" or
    # "categorical"); None for data given as an array without names. `predict` reads a table
    # by these names, whatever its column order.
    columns: list[str] | None = None
    kinds: list[str] | None = None
    unseen_categories: int = field(default=0, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.member_preprocessing is None:
            self.member_preprocessing = [0] * self.net.k
        if self.columns is None and self.preprocessing.columns is not None:
            self.columns = list(self.preprocessing.columns)  # a model file of sweeps 0.2.0

    def __repr__(self) -> str:
        kind = "classifier" if self.task == "classification" else "regressor"
        study = f" of study '{self.info['study']}'" if self.info.get("study") else ""
        return (f"sweeps.TrainedModel({kind}{study}, {self.n_members} member(s), "
                f"{self.info.get('final_model', 'refit')}, {self.n_features_in_} features)")

    # --- scikit-learn's fitted-estimator conventions ---------------------------------------
    def __sklearn_is_fitted__(self) -> bool:
        return True

    def __sklearn_tags__(self):
        return _task_tags(super().__sklearn_tags__(), self.task)

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
        if self.columns is None:
            raise AttributeError("feature_names_in_: the model was trained on an array, not a table")
        return np.asarray(self.columns, dtype=object)

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
        if self.columns is not None:
            return len(self.columns)
        return self.preprocessing.n_numeric

    def member_outputs(self, X: Any, shared: dict | None = None) -> torch.Tensor:
        """Raw outputs of every member `[members, rows, outputs]`: logits or standardized targets.

        `shared`: features already computed for these rows by the same preprocessing objects
        (the parts of an `EnsembleModel` share their folds' preprocessings), filled as they are
        computed: a quantile transform of every row is most of a small net's prediction time."""
        X = self._check(X)
        device = self.net.weights[0].device
        width = self.net.n_inputs  # fold-models whose encoders saw fewer categories get zero columns
        shared = {} if shared is None else shared
        features = []
        for p in self.preprocessings:
            key = (id(p), width, device)
            if key not in shared:
                shared[key] = torch.nn.functional.pad(torch.as_tensor(p.features(X), device=device),
                                                      (0, width - p.n_features))
            features.append(shared[key])
        x = torch.stack([features[i] for i in self.member_preprocessing])
        with torch.no_grad():
            return self.net.predict(x, classification=self.task == "classification")

    def log_proba(self, X: Any, shared: dict | None = None) -> torch.Tensor:
        """Log of the members' mean class probabilities `[rows, classes]` (classification)."""
        if self.task != "classification":
            raise SweepsError("log_proba: this is a regression model; use predict.")
        out = torch.log_softmax(self.member_outputs(X, shared).double(), dim=-1)
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

    def predict(self, X: Any, shared: dict | None = None) -> np.ndarray:
        """Class labels (classification) or target values in their own units (regression)."""
        if self.task == "classification":
            return np.asarray(self.classes)[self.predict_proba(X).argmax(-1)]
        return self._target_units(self.member_outputs(X, shared)).cpu().numpy()

    def _check(self, X: Any):
        """Rows as the preprocessing reads them: a table by the training columns' names (in any
        order; missing or extra columns refused), or an array of the training width. Missing
        numeric values are filled as in training; categories never seen are counted and warned of."""
        tabular = self.preprocessing.columns is not None  # the preprocessing reads named columns
        if hasattr(X, "columns") and self.columns is not None:
            X = self._by_name(X)
            if tabular:
                self._warn_unseen(X)
                return X
        elif tabular:
            raise SweepsError(f"predict: X must be a table (a pandas DataFrame) with the training columns "
                              f"{_preview(self.columns)}; this model encodes categorical columns by name.")
        try:
            # float32, as the training rows were held (`data.Dataset`): a value on one of the fitted
            # quantiles must fall on it here too, not a float64 hair beside it.
            X = np.asarray(X.to_numpy(dtype=np.float64, na_value=np.nan) if hasattr(X, "to_numpy") else X,
                           dtype=np.float64).astype(np.float32)
        except (TypeError, ValueError):
            raise SweepsError("predict: X must be numeric, like the training data.") from None
        if X.ndim != 2 or X.shape[1] != self.n_features:
            raise SweepsError(f"predict: X must have shape (rows, {self.n_features}), got {X.shape}.")
        if np.isinf(X).any():
            raise SweepsError("predict: X has infinite values; replace them, or mark them missing (NaN: filled "
                              "with the training median).")
        return X

    def _by_name(self, X):
        """The table's columns in training order, each checked for its kind."""
        import pandas as pd

        names = [str(c) for c in X.columns]
        missing = [c for c in self.columns if c not in names]
        extra = [c for c in names if c not in self.columns]
        if missing or extra:
            what = "; ".join(part for part in (f"missing {_preview(missing)}" if missing else "",
                                               f"extra {_preview(extra)}" if extra else "") if part)
            raise SweepsError(f"predict: X's columns differ from the training columns ({what}); give a table with "
                              f"exactly the training columns {_preview(self.columns)}, in any order.")
        if len(set(names)) != len(names):
            raise SweepsError("predict: X has repeated column names; give each training column once.")
        X = X.set_axis(names, axis=1)[self.columns]
        for column, kind in zip(self.columns, self.kinds or ["numeric"] * len(self.columns)):
            values = X[column]
            if kind == "numeric" and not (pd.api.types.is_numeric_dtype(values) or
                                          pd.api.types.is_bool_dtype(values)):
                converted = pd.to_numeric(values, errors="coerce")
                bad = values[converted.isna() & values.notna()]
                if len(bad):
                    raise SweepsError(f"predict: column {column!r} was numeric in training, but holds "
                                      f"{bad.iloc[0]!r}; give numbers (or leave the cell empty: filled with the "
                                      "training median).")
                X = X.assign(**{column: converted})
            elif kind == "numeric" and np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan)).any():
                raise SweepsError(f"predict: column {column!r} has infinite values; replace them, or leave the "
                                  "cells empty (filled with the training median).")
        return X

    def _warn_unseen(self, X) -> None:
        """One warning per call, counting the categories no member's encoder kept and that have no
        shared 'infrequent' column to go to: they are encoded as no category at all."""
        unseen, example = 0, None
        for c, column in enumerate(self.preprocessing.categorical_columns):
            if any(p.infrequent[c] for p in self.preprocessings if c < len(p.infrequent)):
                continue  # rare and unseen categories share that column, as in training
            known = set().union(*(p.categories[c] for p in self.preprocessings if c < len(p.categories)))
            values = category_strings(X[column]).dropna()
            new = values[~values.isin(known)]
            unseen += len(new)
            if len(new) and example is None:
                example = (new.iloc[0], column)
        self.unseen_categories = unseen  # of the latest call: evaluate reports it
        if unseen:
            warnings.warn(f"predict: {unseen} value(s) are categories never seen in training (e.g. "
                          f"{example[0]!r} in column {example[1]!r}); each is encoded as no category of its "
                          "column (all its one-hot inputs 0).", UnseenCategoryWarning, stacklevel=4)

    # --- file ----------------------------------------------------------------------------
    def payload(self, prefix: str = "", preprocessing: bool = True) -> tuple[dict, dict[str, torch.Tensor]]:
        """(JSON header, named tensors) of the model, its tensors' names behind `prefix`; without
        `preprocessing`, the preprocessings' arrays are left out (another payload holds them)."""
        net_meta, tensors = self.net.state()
        tensors = {f"{prefix}net.{name}": t.detach().cpu().contiguous() for name, t in tensors.items()}
        preprocessing_meta = []
        for i, prep in enumerate(self.preprocessings):
            meta, arrays = prep.state()
            preprocessing_meta.append(meta)
            if preprocessing:
                tensors.update({f"{prefix}preprocessing.{i}.{name}": torch.from_numpy(np.ascontiguousarray(a))
                                for name, a in arrays.items()})
        header = {"task": self.task, "params": self.params, "classes": self.classes, "info": self.info,
                  "net": net_meta, "preprocessings": preprocessing_meta,
                  "member_preprocessing": self.member_preprocessing, "columns": self.columns, "kinds": self.kinds}
        return header, tensors

    @classmethod
    def from_payload(cls, header: dict, tensors: dict[str, torch.Tensor], prefix: str = "",
                     preprocessing_prefix: str | None = None) -> TrainedModel:
        """The model of `payload`'s header and tensors, checked (`check_model`; a ValueError if not);
        the preprocessings' arrays are read behind `preprocessing_prefix` when another payload holds them."""
        net = StackedMLP.from_state(header["net"], {k[len(prefix) + 4:]: v for k, v in tensors.items()
                                                    if k.startswith(f"{prefix}net.")})
        at = prefix if preprocessing_prefix is None else preprocessing_prefix
        preprocessings = [
            Preprocessing.from_state(meta, {k[len(at):].split(".", 2)[2]: v.numpy() for k, v in tensors.items()
                                            if k.startswith(f"{at}preprocessing.{i}.")})
            for i, meta in enumerate(header["preprocessings"])]
        model = cls(str(header["task"]), dict(header["params"]), preprocessings, net,
                    [int(i) for i in header["member_preprocessing"]], header["classes"], dict(header["info"]),
                    header.get("columns"), header.get("kinds"))
        check_model(model)
        return model

    def save(self, path: str | Path) -> Path:
        """Write the model as one safetensors file, atomically (a crash leaves no half file)."""
        header, tensors = self.payload()
        return write_safetensors(path, tensors, {"format": FORMAT, "model": json.dumps(header)})


@dataclass(repr=False)
class EnsembleModel(BaseEstimator):
    """A weighted average of trained models: the trials an ensemble selection chose
    (`Study(final_model="ensemble")`), each with its own fold-models and preprocessing.

    Predictions are the weighted average of the parts' class probabilities, or of their
    predictions in the target's units; otherwise it is used as a `TrainedModel` is (a fitted
    scikit-learn estimator, `load_model`, ONNX).
    """

    parts: list[TrainedModel]
    weights: list[float]
    info: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        study = f" of study '{self.info['study']}'" if self.info.get("study") else ""
        return f"sweeps.EnsembleModel({self.task}{study}, {len(self.parts)} trials, {self.n_members} member(s))"

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def __sklearn_tags__(self):
        return _task_tags(super().__sklearn_tags__(), self.task)

    score = TrainedModel.score
    fit = TrainedModel.fit

    task = property(lambda self: self.parts[0].task)
    classes = property(lambda self: self.parts[0].classes)
    columns = property(lambda self: self.parts[0].columns)
    preprocessing = property(lambda self: self.parts[0].preprocessing)
    classes_ = TrainedModel.classes_
    n_features_in_ = property(lambda self: self.parts[0].n_features_in_)
    feature_names_in_ = property(lambda self: self.parts[0].feature_names_in_)
    n_members = property(lambda self: sum(p.n_members for p in self.parts))
    unseen_categories = property(lambda self: max(p.unseen_categories for p in self.parts))

    def log_proba(self, X: Any) -> torch.Tensor:
        """Log of the weighted average of the parts' class probabilities `[rows, classes]`."""
        if self.task != "classification":
            raise SweepsError("log_proba: this is a regression model; use predict.")
        shared: dict = {}  # features computed once per preprocessing the parts share
        parts = torch.stack([p.log_proba(X, shared) for p in self.parts])  # [parts, rows, classes]
        log_w = torch.log(torch.tensor(self.weights, dtype=parts.dtype)).view(-1, 1, 1)
        return torch.logsumexp(parts + log_w, dim=0)

    def predict_proba(self, X: Any) -> np.ndarray:
        return self.log_proba(X).exp().float().cpu().numpy()

    def predict(self, X: Any) -> np.ndarray:
        if self.task == "classification":
            return np.asarray(self.classes)[self.predict_proba(X).argmax(-1)]
        shared: dict = {}  # features computed once per preprocessing the parts share
        return sum(w * p.predict(X, shared) for w, p in zip(self.weights, self.parts))

    def save(self, path: str | Path) -> Path:
        """One safetensors file: every part's tensors behind `part{i}.`, their headers and the weights.

        The parts of one study were trained on the same folds, so their preprocessings are as a
        rule the same arrays (quantile tables: the bulk of a model file); a part whose
        preprocessings equal the first part's stores none and names it (`preprocessing_of`)."""
        headers, tensors = [], {}
        for i, part in enumerate(self.parts):
            shared = i > 0 and _same_preprocessings(part, self.parts[0])
            header, part_tensors = part.payload(f"part{i}.", preprocessing=not shared)
            if shared:
                header["preprocessing_of"] = 0
            headers.append(header)
            tensors.update(part_tensors)
        document = {"weights": self.weights, "info": self.info, "parts": headers}
        return write_safetensors(path, tensors, {"format": ENSEMBLE_FORMAT, "model": json.dumps(document)})


ENSEMBLE_FORMAT = "sweeps-ensemble-1"


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """`tensors` and `metadata` as one safetensors file, whole or not at all (a crash or a full disk
    leaves the old file, if any, and no partial one); processes writing the same path at once
    each write a temporary file of their own."""
    from safetensors.torch import save

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    # Serialized in memory and written by Python, so that a full disk or a refused write is an
    # OSError with its errno (safetensors' own writer raises an error of its own kind).
    data = save(tensors, metadata=metadata)
    try:
        with open(partial, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return path


def _same_preprocessings(a: TrainedModel, b: TrainedModel) -> bool:
    if a.preprocessings is b.preprocessings:
        return True
    if len(a.preprocessings) != len(b.preprocessings):
        return False
    for p, q in zip(a.preprocessings, b.preprocessings):
        (p_meta, p_arrays), (q_meta, q_arrays) = p.state(), q.state()
        if p_meta != q_meta or p_arrays.keys() != q_arrays.keys() or not all(
                np.array_equal(p_arrays[k], q_arrays[k], equal_nan=p_arrays[k].dtype.kind == "f") for k in p_arrays):
            return False
    return True


def load_model(path: str | Path, device: str = "cpu") -> TrainedModel | EnsembleModel:
    """Load a model saved by `python -m sweeps.evaluate`; nothing in the file is executed.

    The file's JSON header is checked against its tensors before anything is built (shapes,
    classes, which preprocessing each member reads, finite weights, known scalings): a file
    edited by hand, or damaged, is refused with one line instead of predicting garbage. A
    file of `final_model="ensemble"` gives an `EnsembleModel`, whose parts are checked alike.
    """
    from safetensors import safe_open

    path = Path(path)
    device = _device(device)
    if not path.is_file():
        raise SweepsError(f"{Path(path).absolute()}: no such model file; python -m sweeps.evaluate STUDY_FILE "
                          "writes one.")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic.startswith(_OLD_FORMAT_MAGIC):
        raise SweepsError(f"{path}: a pickle-based file (sweeps' first model format, or torch.save); "
                          "opening it could run code, so sweeps refuses it; save the model again with "
                          "python -m sweeps.evaluate STUDY_FILE.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
        if header.get("format") == FORMAT:
            loaded = TrainedModel.from_payload(json.loads(header["model"]), tensors)
            models = [loaded]
        elif header.get("format") == ENSEMBLE_FORMAT:
            document = json.loads(header["model"])
            parts = []
            for i, h in enumerate(document["parts"]):
                source = h.get("preprocessing_of")
                if source is not None and not (isinstance(source, int) and 0 <= source < i):
                    raise ValueError(f"part {i} names the preprocessing of part {source!r}")
                parts.append(TrainedModel.from_payload(h, tensors, f"part{i}.",
                                                       None if source is None else f"part{source}."))
                if source is not None:  # one set of preprocessing objects for the parts that share it
                    parts[-1].preprocessings = parts[source].preprocessings
            loaded = EnsembleModel(parts, [float(w) for w in document["weights"]], dict(document["info"]))
            check_ensemble(loaded)
            models = parts
        else:
            raise ValueError(f"format {header.get('format')!r}")
    except SweepsError:
        raise
    except Exception as e:  # a truncated, foreign or hand-edited file
        raise SweepsError(f"{path}: not a sweeps model file, or a damaged one ({type(e).__name__}: {e}); "
                          "python -m sweeps.evaluate STUDY_FILE writes one.") from None
    for model in models:
        model.net = model.net.to(device)
    return loaded


def check_ensemble(model: EnsembleModel) -> None:
    """Raise `ValueError` where an ensemble's parts or weights disagree."""
    if len(model.parts) < 1 or len(model.weights) != len(model.parts):
        raise ValueError(f"{len(model.parts)} parts for {len(model.weights)} weights")
    if not all(math.isfinite(w) and w > 0 for w in model.weights) or abs(sum(model.weights) - 1) > 1e-6:
        raise ValueError(f"weights {model.weights} must be positive and sum to 1")
    first = model.parts[0]
    for part in model.parts[1:]:
        if (part.task, part.classes, part.columns) != (first.task, first.classes, first.columns):
            raise ValueError("the parts predict different tasks, classes or columns")


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        raise SweepsError(f"load_model: device {name!r} is not a device; use 'cpu' or 'cuda'.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SweepsError(f"load_model: device {name!r}: no CUDA device is available here; use device='cpu'.")
    return device


def check_model(model: TrainedModel) -> None:
    """Raise `ValueError` naming the first way the model's description and its tensors disagree."""
    net, preps = model.net, model.preprocessings
    if model.task not in ("classification", "regression"):
        raise ValueError(f"task {model.task!r}")
    if model.task == "classification":
        if not isinstance(model.classes, list) or len(model.classes) < 2 or len(model.classes) != net.n_outputs \
                or len({json.dumps(c) for c in model.classes}) != len(model.classes):
            raise ValueError(f"{net.n_outputs} outputs, but classes {model.classes!r}")
    elif model.classes is not None or net.n_outputs != 1:
        raise ValueError("a regression model has one output and no classes")
    if not preps:
        raise ValueError("no preprocessing")
    if len(model.member_preprocessing) != net.k or not all(
            isinstance(i, int) and 0 <= i < len(preps) for i in model.member_preprocessing):
        raise ValueError(f"member_preprocessing {model.member_preprocessing!r} for {net.k} members and "
                         f"{len(preps)} preprocessing(s)")
    if not all(bool(torch.isfinite(t).all()) for t in net.params):
        raise ValueError("non-finite weights")
    dropout = net.dropout
    if not isinstance(dropout, float) or not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout {dropout!r}")
    for i, p in enumerate(preps):
        n = p.n_numeric
        if p.scaling not in SCALINGS:
            raise ValueError(f"preprocessing {i}: unknown scaling {p.scaling!r}")
        arrays = {"center": p.center, "scale": p.scale, "fill": p.fill}
        if any(a.shape != (n,) or not np.isfinite(a).all() for a in arrays.values()) or (p.scale == 0).any():
            raise ValueError(f"preprocessing {i}: center, scale and fill must be {n} finite numbers (scale non-zero)")
        if p.scaling in ("quantile", "auto") and n:
            q = p.quantiles
            if q is None or q.ndim != 2 or q.shape[1] != n or len(q) < 1 or not np.isfinite(q).all() \
                    or (np.diff(q, axis=0) < 0).any():
                raise ValueError(f"preprocessing {i}: quantiles must be [levels, {n}], finite and non-decreasing")
        if p.scaling == "auto" and n and (p.ranked is None or p.ranked.shape != (n,)):
            raise ValueError(f"preprocessing {i}: 'auto' needs which of its {n} columns are ranked")
        columns = len(p.categorical_columns)
        if not len(p.categories) == len(p.infrequent) == len(p.most_frequent) == columns:
            raise ValueError(f"preprocessing {i}: {columns} categorical columns but other category lists")
        if p.numeric_columns is not None and len(p.numeric_columns) != n:
            raise ValueError(f"preprocessing {i}: {len(p.numeric_columns)} numeric column names for {n} columns")
        if p.n_features > net.n_inputs:
            raise ValueError(f"preprocessing {i} gives {p.n_features} features, the network takes {net.n_inputs}")
        if not (math.isfinite(p.y_mean) and math.isfinite(p.y_std) and p.y_std > 0):
            raise ValueError(f"preprocessing {i}: target mean and std must be finite (std > 0)")
        if net.embedding is not None and net.n_numeric != n:
            raise ValueError(f"the embeddings take {net.n_numeric} numeric inputs, preprocessing {i} gives {n}")
    columns = model.columns
    if columns is not None:
        if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns) \
                or len(set(columns)) != len(columns):
            raise ValueError("columns must be distinct names")
        if model.kinds is not None and (len(model.kinds) != len(columns)
                                        or not set(model.kinds) <= {"numeric", "categorical"}):
            raise ValueError("kinds must say 'numeric' or 'categorical' for each column")
        needed = preps[0].columns if preps[0].columns is not None else None
        if needed is not None and sorted(needed) != sorted(columns):
            raise ValueError("the preprocessing reads other columns than the model's")
        if needed is None and len(columns) != preps[0].n_numeric:
            raise ValueError(f"{len(columns)} columns for {preps[0].n_numeric} numeric inputs")


def _task_tags(tags, task: str):
    """scikit-learn's tags of a fitted classifier or regressor (what `is_classifier` reads)."""
    from sklearn.utils import ClassifierTags, RegressorTags

    if task == "classification":
        tags.estimator_type, tags.classifier_tags = "classifier", ClassifierTags()
    else:
        tags.estimator_type, tags.regressor_tags = "regressor", RegressorTags()
    return tags


def _preview(names: list[str], most: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:most])
    return f"[{shown}{', ...' if len(names) > most else ''}] ({len(names)})" if len(names) > most else f"[{shown}]"


class UnseenCategoryWarning(UserWarning):
    """`predict` met categories that training never saw (counted in the message)."""

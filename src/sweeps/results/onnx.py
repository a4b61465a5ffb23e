"""A saved model as ONNX, for serving stacks that do not run Python (onnxruntime, Triton, ...).

    python -m sweeps.export studies/wine_red.py --model onnx [--output storage/wine_red.onnx]

What the ONNX graph covers: raw numeric rows in, in the order of the model's numeric
columns (`numeric_columns` in the graph's metadata), missing values as NaN; the fitted
preprocessing (median imputation; standard, robust with smooth clipping, quantile or auto
scaling); periodic embeddings; shared-weight members; every member of an ensemble (fold
models or refits), averaged as `load_model` averages them. Out: class probabilities
(classification, columns in `classes` order, also in the metadata) or predictions in the
target's units (regression).

Categorical (text) columns come in as a second input, `categorical`: a string tensor [rows,
columns] in the order of `categorical_columns` (also in the metadata), an empty string for a
missing value. The graph encodes them as the model does: a `LabelEncoder` (ONNX-ML) per
column maps each string to its place in the vocabulary of every fold's kept categories (a
string no fold kept, and a missing one, to places of their own), and each fold's own one-hot
rows are looked up from a table built by the very function that encodes them in Python
(`preprocess._one_hot`: its imputation, its shared column for rare and unseen categories).

The graph is traced from a torch module that repeats `TrainedModel`'s arithmetic, and the
export checks it with onnxruntime against `load_model`'s predictions before writing: within 1e-5
in probability, or in standard deviations of a regression target.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from scipy.special import ndtri

from sweeps.errors import SweepsError
from sweeps.data.preprocess import _CLIP_EPS, _one_hot
from sweeps.engine.trained import EnsembleModel, TrainedModel

TOLERANCE = 1e-5
# scikit-learn clips the normal quantiles at ndtri(1e-7 - eps) and its mirror: about ±5.2.
_LOWEST, _HIGHEST = float(ndtri(_CLIP_EPS - np.spacing(1))), float(ndtri(1 - (_CLIP_EPS - np.spacing(1))))


def _ndtri(p: torch.Tensor) -> torch.Tensor:
    """The standard normal's inverse CDF from ONNX-exportable ops: Acklam's rational approximation
    (relative error below 1.2e-9, far below the float32 the network computes in;
    torch.special.ndtri has no ONNX op)."""
    a = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
         -3.066479806614716e01, 2.506628277459239e00)
    b = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
         -1.328068155288572e01)
    c = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
         4.374664141464968e00, 2.938163982698783e00)
    d = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
    low = 0.02425
    q = p - 0.5
    r = q * q
    central = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q / (
        ((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1)
    tail_p = torch.where(p < 0.5, p, 1 - p)
    t = torch.sqrt(-2 * torch.log(tail_p))
    tail = (((((c[0] * t + c[1]) * t + c[2]) * t + c[3]) * t + c[4]) * t + c[5]) / (
        (((d[0] * t + d[1]) * t + d[2]) * t + d[3]) * t + 1)
    tail = torch.where(p < 0.5, tail, -tail)
    return torch.where((p >= low) & (p <= 1 - low), central, tail)


def vocabularies(preprocessings) -> list[list[str]]:
    """Per categorical column, every category any of `preprocessings` keeps or imputes, sorted."""
    columns = preprocessings[0].categorical_columns
    return [sorted({c for p in preprocessings for c in [*p.categories[j], p.most_frequent[j]] if c})
            for j in range(len(columns))]


def one_hot_tables(prep, vocabulary: list[list[str]]) -> list[np.ndarray]:
    """Per categorical column, `prep`'s one-hot row for each vocabulary entry, then for a missing
    value, then for a string no fold kept: float32 [len(vocabulary) + 2, width]."""
    import pandas as pd

    tables = []
    for j, words in enumerate(vocabulary):
        unseen = "\x00unseen:" + "|".join(words)  # a string that is none of the words
        column = pd.Series([*words, None, unseen], dtype=object)
        tables.append(_one_hot(column, prep.categories[j], prep.infrequent[j], prep.most_frequent[j]))
    return tables


class _Preprocess(torch.nn.Module):
    def __init__(self, prep, vocabulary: list[list[str]] | None = None) -> None:
        super().__init__()
        f64 = lambda a: torch.as_tensor(np.asarray(a, np.float64))  # noqa: E731
        self.scaling = prep.scaling
        self.register_buffer("fill", f64(prep.fill))
        self.register_buffer("center", f64(prep.center))
        self.register_buffer("scale", f64(prep.scale))
        ranked = np.zeros(len(prep.center), bool) if prep.quantiles is None else (
            np.ones(len(prep.center), bool) if prep.ranked is None else prep.ranked)
        self.register_buffer("ranked", torch.as_tensor(ranked))
        quantiles = prep.quantiles if prep.quantiles is not None else np.zeros((2, len(prep.center)))
        self.register_buffer("quantiles", f64(quantiles))  # [n_q, columns]
        self.n_numeric = len(prep.center)
        self.tables = torch.nn.ParameterList(
            torch.nn.Parameter(torch.as_tensor(t), requires_grad=False)
            for t in (one_hot_tables(prep, vocabulary) if vocabulary else []))

    def forward(self, x: torch.Tensor | None, codes: torch.Tensor | None = None) -> torch.Tensor:
        """Features float32: the numeric columns scaled, then each categorical column's one-hot rows."""
        blocks = [self.numeric(x).float()] if self.n_numeric else []
        blocks += [table[codes[:, j]] for j, table in enumerate(self.tables)]
        return torch.cat(blocks, dim=1) if len(blocks) > 1 else blocks[0]

    def numeric(self, x: torch.Tensor) -> torch.Tensor:  # x: [rows, columns] float64
        x = torch.where(torch.isnan(x), self.fill, x)
        out = (x - self.center) / self.scale
        if self.scaling == "robust":
            out = out / torch.sqrt(1 + (out / 3) ** 2)
        if self.scaling in ("quantile", "auto"):
            out = torch.where(self.ranked, self._quantile(x), out)
        return out

    def _quantile(self, x: torch.Tensor) -> torch.Tensor:
        """scikit-learn's tie-aware interpolation, as a sum of clipped ramps over the quantile segments."""
        q = self.quantiles  # [n, c]
        n = q.shape[0]
        step = 1.0 / (n - 1)
        lo, hi = q[:-1], q[1:]  # [n-1, c]
        width = hi - lo
        xs = x.unsqueeze(1)  # [rows, 1, c]
        # Upward interpolation: the share of each segment below x; a zero-width segment (ties)
        # counts whole once x reaches it.
        up = torch.where(width > 0, ((xs - lo) / torch.where(width > 0, width, 1.0)).clamp(0, 1),
                         (xs >= hi).to(x.dtype))
        # Downward interpolation (of -x against reversed quantiles): the same, ties counting once x passes them.
        down = torch.where(width > 0, ((xs - lo) / torch.where(width > 0, width, 1.0)).clamp(0, 1),
                           (xs > lo).to(x.dtype))
        cdf = 0.5 * (up.sum(1) + down.sum(1)) * step
        cdf = torch.where(x - _CLIP_EPS < q[0], torch.zeros_like(cdf), cdf)
        cdf = torch.where(x + _CLIP_EPS > q[-1], torch.ones_like(cdf), cdf)
        return _ndtri(cdf.clamp(1e-300, 1.0 - 1e-16)).clamp(_LOWEST, _HIGHEST)


class _Served(torch.nn.Module):
    """`TrainedModel`'s prediction from raw numeric rows (and category codes, `vocabulary`'s places)."""

    def __init__(self, model: TrainedModel, vocabulary: list[list[str]] | None = None) -> None:
        super().__init__()
        self.model = model
        self.preps = torch.nn.ModuleList(_Preprocess(p, vocabulary) for p in model.preprocessings)
        self.members = list(model.member_preprocessing)
        self.classification = model.task == "classification"
        self.register_buffer("y_std", torch.tensor([model.preprocessings[i].y_std for i in self.members],
                                                   dtype=torch.float64))
        self.register_buffer("y_mean", torch.tensor([model.preprocessings[i].y_mean for i in self.members],
                                                    dtype=torch.float64))

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        x, codes = _split(inputs, self.preps[0])
        features = [p(x, codes) for p in self.preps]
        stacked = torch.stack([features[i] for i in self.members])  # [members, rows, columns]
        out = self.model.net.combine(self.model.net.forward(stacked)[0], self.classification)
        if self.classification:
            return torch.softmax(out, dim=-1).mean(0)
        return (out[..., 0].double() * self.y_std[:, None] + self.y_mean[:, None]).mean(0)


def parity_gap(model: TrainedModel, theirs: np.ndarray, ours: np.ndarray) -> float:
    """The largest difference between two predictions of `model`: in probability for a classifier,
    in standard deviations of the target for a regressor (float32 networks agree to about 1e-7
    of a prediction's size, so a fixed gap in the target's own units would depend on its scale)."""
    preprocessings = [p for part in getattr(model, "parts", [model]) for p in part.preprocessings]
    scale = 1.0 if model.task == "classification" else float(np.mean([p.y_std for p in preprocessings]))
    return float(np.abs(theirs - ours).max()) / scale


class _ServedEnsemble(torch.nn.Module):
    """`EnsembleModel`'s prediction: the weighted average of its parts' (probabilities, or values)."""

    def __init__(self, model: EnsembleModel, vocabulary: list[list[str]] | None = None) -> None:
        super().__init__()
        self.parts = torch.nn.ModuleList(_Served(part, vocabulary) for part in model.parts)
        self.weights = [float(w) for w in model.weights]
        self.classification = model.task == "classification"

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return sum(w * part(*inputs) for w, part in zip(self.weights, self.parts))


def _split(inputs: tuple[torch.Tensor, ...], prep: _Preprocess) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(numeric rows as float64 or None, category codes or None), from the graph's inputs."""
    numeric = inputs[0].double() if prep.n_numeric else None
    codes = inputs[-1] if len(prep.tables) else None
    return numeric, codes


def _category_encoder(columns: list[str], vocabulary: list[list[str]], opset: int):
    """The graph's front: strings [rows, columns] -> codes int64 [rows, columns], per column its
    vocabulary's places, a missing value (an empty string) next, any other string last."""
    from onnx import TensorProto, helper

    nodes, encoded = [], []
    for j, words in enumerate(vocabulary):
        nodes += [helper.make_node("Gather", ["categorical", f"column_{j}_index"], [f"column_{j}"], axis=1),
                  helper.make_node("LabelEncoder", [f"column_{j}"], [f"codes_{j}"], domain="ai.onnx.ml",
                                   keys_strings=[*words, ""], values_int64s=list(range(len(words) + 1)),
                                   default_int64=len(words) + 1)]
        encoded.append(f"codes_{j}")
    nodes.append(helper.make_node("Concat", encoded, ["codes"], axis=1))
    indices = [helper.make_tensor(f"column_{j}_index", TensorProto.INT64, [1], [j]) for j in range(len(columns))]
    graph = helper.make_graph(
        nodes, "sweeps_categories",
        [helper.make_tensor_value_info("categorical", TensorProto.STRING, ["rows", len(columns)])],
        [helper.make_tensor_value_info("codes", TensorProto.INT64, ["rows", len(columns)])], initializer=indices)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid("ai.onnx.ml", 2)])


def category_strings_in(sample) -> np.ndarray:
    """A table's categorical columns as the graph takes them: strings, an empty one where missing."""
    return np.asarray(sample.astype(object).where(sample.notna(), "").astype(str), dtype=object)


OPSET = 17


def export_onnx(model: TrainedModel | EnsembleModel, path: Path, sample) -> Path:
    """Write `model` as ONNX to `path`, after checking onnxruntime against `model` on `sample` rows
    (an array of the numeric columns, or a table with every training column)."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise SweepsError("--model onnx needs onnx and onnxruntime: pip install -e \".[onnx]\".") from None
    prep = model.preprocessing
    parts = model.parts if isinstance(model, EnsembleModel) else [model]
    every = [p for part in parts for p in part.preprocessings]
    categorical = list(prep.categorical_columns)
    vocabulary = vocabularies(every) if categorical else None
    served = (_ServedEnsemble(model, vocabulary) if isinstance(model, EnsembleModel)
              else _Served(model, vocabulary)).eval()
    numeric = prep.n_numeric > 0
    inputs, names, feeds = [], [], {}
    if numeric:
        values = sample[prep.numeric_columns].to_numpy(np.float64, na_value=np.nan) if categorical else sample
        x = torch.as_tensor(np.asarray(values, np.float64)).float()
        inputs.append(x)
        names.append("numeric")
        feeds["numeric"] = x.numpy()
    if categorical:
        strings = category_strings_in(sample[categorical])
        codes = np.stack([_codes(strings[:, j], words) for j, words in enumerate(vocabulary)], axis=1)
        inputs.append(torch.as_tensor(codes))
        names.append("codes")
        feeds["categorical"] = strings
    partial = path.with_name(path.name + ".partial")
    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on constants it folds (the fitted numbers)
        torch.onnx.export(served, tuple(inputs), str(partial), input_names=names,
                          output_names=["probabilities" if served.classification else "prediction"],
                          dynamic_axes={name: {0: "rows"} for name in names}, dynamo=False, opset_version=OPSET)
    graph = onnx.load(str(partial))
    if categorical:  # strings in: the encoder's codes feed the traced graph's
        front = _category_encoder(categorical, vocabulary, OPSET)
        front.ir_version = graph.ir_version  # the traced graph's: merging needs one
        graph = onnx.compose.merge_models(front, graph, io_map=[("codes", "codes")])
    meta = {"numeric_columns": json.dumps(prep.numeric_columns), "categorical_columns": json.dumps(categorical),
            "task": model.task, "classes": json.dumps(model.classes), "members": str(model.n_members)}
    for key, value in meta.items():
        entry = graph.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(graph, str(partial))
    session = onnxruntime.InferenceSession(str(partial), providers=["CPUExecutionProvider"])
    theirs = session.run(None, feeds)[0]
    ours = model.predict_proba(sample) if served.classification else model.predict(sample)
    gap = parity_gap(model, np.asarray(theirs, np.float64), ours)
    if not gap <= TOLERANCE:
        partial.unlink(missing_ok=True)
        raise SweepsError(f"--model onnx: onnxruntime's predictions differ from load_model's by {gap:.2e} "
                          f"(> {TOLERANCE:g}{'' if served.classification else ' target standard deviations'}); "
                          "nothing was written.")
    partial.replace(path)
    return path


def _codes(strings: np.ndarray, words: list[str]) -> np.ndarray:
    """What the graph's LabelEncoder gives: a word's place, len(words) for "", len(words) + 1 else."""
    places = {w: i for i, w in enumerate(words)} | {"": len(words)}
    return np.array([places.get(s, len(words) + 1) for s in strings], dtype=np.int64)

"""What an ensemble over trials is selected from: each complete trial's out-of-fold predictions
and its k fold-models, kept for the study's best `Study(candidates=M)` trials.

A trial already trains k fold-models, and each predicts the rows of its own validation fold:
together they predict every development row once, by a model that did not train on it (the
out-of-fold predictions, "OOF"). `final_model="ensemble"` selects a weighted set of trials
on them (`results/ensemble.py`) and averages the chosen trials' fold-models, so nothing is
trained again.

Files, beside the database (`storage/<name>-candidates/`, or under `storage/` for a server
URL), per trial: `trial-N-oof.npy` (float32 [development rows, outputs]: class probabilities,
or predictions in the target's units; rows in the order of `Dataset.dev`), `trial-N-model.pt`
(its fold-models: a `TrainedModel` file without the preprocessings' arrays) and `trial-N.json`
(the trial, its value, the data's fingerprint; written last: a candidate with it is whole).
Every trial of a study is trained on the same folds, so the folds' fitted preprocessings (their
quantile tables are most of a model's bytes) are kept once, in `preprocessing-<sha256>.pt`,
named by their content, which each trial's JSON names. Every file is written to a
temporary name and renamed; the held-out rows are never predicted here. When a trial joins
the best M, the files of the trials that left them are removed. With workers on several
machines each keeps the files of the trials it ran: evaluate where they are, or point
`SWEEPS_CANDIDATES_DIR` at a folder every machine shares.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from sweeps.data.dataset import Dataset
from sweeps.data.folds import Folds
from sweeps.engine.scores import FoldResult
from sweeps.engine.trained import TrainedModel, write_safetensors
from sweeps.errors import SweepsError
from sweeps.store.storage import output_path

FORMAT = "sweeps-candidate-2"  # 1: each trial's model file held its preprocessings
MODEL_FORMAT = "sweeps-candidate-model-1"


def folder_for(url: str, study_name: str) -> Path:
    shared = os.environ.get("SWEEPS_CANDIDATES_DIR")
    if shared:
        return Path(shared).expanduser() / study_name
    return output_path(url, study_name, "-candidates")


def out_of_fold(result: FoldResult, folds: Folds, dataset: Dataset) -> np.ndarray:
    """The trial's predictions of every development row by the fold-model that did not train on it:
    float32 [rows, classes] probabilities, or [rows, 1] predictions in the target's units."""
    outputs = result.val_outputs
    classification = dataset.classes is not None
    width = outputs.shape[-1]
    oof = np.full((len(dataset.dev), width), np.nan, dtype=np.float32)
    for f, rows in enumerate(folds.val_rows):
        out = outputs[f, :len(rows)].double()
        if classification:
            values = torch.softmax(out, dim=-1)
        else:
            prep = folds.preprocessings[f]
            values = out * prep.y_std + prep.y_mean
        oof[np.searchsorted(dataset.dev, rows)] = values.numpy().astype(np.float32)
    return oof


def write(folder: Path, trial: optuna.Trial, value: float, result: FoldResult, folds: Folds, dataset: Dataset,
          task: str, params: dict, keep: int) -> None:
    """Keep a complete trial as a candidate, if it is among the study's best `keep`."""
    complete = sorted((t for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                       if t.value is not None), key=lambda t: t.value)
    better = sum(1 for t in complete if t.number != trial.number and t.value < value)
    if keep < 1 or better >= keep:
        return
    folder.mkdir(parents=True, exist_ok=True)
    n = trial.number
    _save_array(folder / f"trial-{n}-oof.npy", out_of_fold(result, folds, dataset))
    classes = None if dataset.classes is None else [c.item() if hasattr(c, "item") else c for c in dataset.classes]
    model = TrainedModel(task, dict(params), folds.preprocessings, result.model, list(range(folds.k)), classes,
                         {"trial": n}, None if dataset.columns is None else list(dataset.columns),
                         list(dataset.kinds) or None)
    preprocessing = _save_model(folder, n, model)
    meta = {"format": FORMAT, "trial": n, "value": value, "fingerprint": _identity(dataset), "k": folds.k,
            "preprocessing": preprocessing}
    _save_text(folder / f"trial-{n}.json", json.dumps(meta))
    _keep_best(folder, [t.number for t in complete if t.number != n] + [n], {t.number: t.value for t in complete}
               | {n: value}, keep)


def _keep_best(folder: Path, numbers: list[int], values: dict[int, float], keep: int) -> None:
    best = set(sorted(numbers, key=lambda m: values[m])[:keep])
    for meta in folder.glob("trial-*.json"):
        number = _number(meta)
        if number is not None and number not in best:
            for path in (meta, folder / f"trial-{number}-oof.npy", folder / f"trial-{number}-model.pt"):
                path.unlink(missing_ok=True)


def _save_model(folder: Path, n: int, model: TrainedModel) -> str:
    """The trial's fold-models in `trial-N-model.pt`, their preprocessings' arrays in the folder's
    shared file (written once); the shared file's name."""
    header, tensors = model.payload()
    shared = {k: v for k, v in tensors.items() if k.startswith("preprocessing.")}
    digest = hashlib.sha256()
    for name in sorted(shared):
        digest.update(name.encode())
        digest.update(shared[name].numpy().tobytes())
    name = f"preprocessing-{digest.hexdigest()[:32]}.pt"
    if not (folder / name).is_file():  # workers may race here: each writes a temporary file of its own
        write_safetensors(folder / name, shared, {"format": MODEL_FORMAT})
    own = {k: v for k, v in tensors.items() if k not in shared}
    write_safetensors(folder / f"trial-{n}-model.pt", own, {"format": MODEL_FORMAT, "model": json.dumps(header)})
    return name


def _load_model(path: Path, shared: Path) -> TrainedModel:
    """A candidate's fold-models with their preprocessings, checked as `load_model` checks a model."""
    from safetensors import safe_open

    def read(file: Path) -> tuple[dict, dict[str, torch.Tensor]]:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            header = f.metadata() or {}
            if header.get("format") != MODEL_FORMAT:
                raise ValueError(f"{file.name}: format {header.get('format')!r}")
            return header, {name: f.get_tensor(name) for name in f.keys()}

    try:
        header, tensors = read(path)
        tensors.update(read(shared)[1])
        return TrainedModel.from_payload(json.loads(header["model"]), tensors)
    except Exception as e:  # a damaged or foreign file
        raise SweepsError(f"{path}: a damaged candidate ({type(e).__name__}: {e}); remove {path.parent} and run "
                          "the sweep again, or use another final_model.") from None


@dataclass
class Candidate:
    trial: int
    value: float
    oof: np.ndarray  # [development rows, outputs]
    model_path: Path
    preprocessing_path: Path

    def model(self) -> TrainedModel:
        return _load_model(self.model_path, self.preprocessing_path)


def read(folder: Path, study: optuna.Study, dataset: Dataset) -> tuple[list[Candidate], list[int]]:
    """The candidates kept for the study's complete trials, best first, and the numbers of the best
    complete trials whose files are not here. Refuses files written for other data."""
    complete = {t.number: t.value for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.value is not None}
    found, foreign = [], []
    for meta_path in sorted(folder.glob("trial-*.json")) if folder.is_dir() else []:
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            continue
        number = meta.get("trial")
        if meta.get("format") != FORMAT or number not in complete:
            continue  # a trial this study no longer has, or another version's file
        if meta.get("fingerprint") != _identity(dataset):
            foreign.append(number)
            continue
        oof = np.load(folder / f"trial-{number}-oof.npy", allow_pickle=False)
        shared = folder / str(meta.get("preprocessing"))
        if oof.shape[0] != len(dataset.dev) or not (folder / f"trial-{number}-model.pt").is_file() \
                or shared.parent != folder or not shared.is_file():
            foreign.append(number)
            continue
        found.append(Candidate(number, complete[number], oof, folder / f"trial-{number}-model.pt", shared))
    if foreign:
        raise SweepsError(f"{folder}: the candidates of trial(s) {sorted(foreign)[:5]} were written for other data "
                          "(their fingerprint or rows differ from the study's); remove the folder and run the sweep "
                          "again, or use another final_model.")
    found.sort(key=lambda c: c.value)
    kept = {c.trial for c in found}
    best = sorted(complete, key=complete.get)[:max(len(found), 1)]
    return found, [n for n in best if n not in kept]


def _identity(dataset: Dataset) -> dict:
    f = dataset.fingerprint
    return {k: f[k] for k in ("data_sha256", "test_rows_sha256", "columns_sha256")}


def _number(path: Path) -> int | None:
    try:
        return int(path.name.split("-")[1].split(".")[0])
    except (IndexError, ValueError):
        return None


def _save_array(path: Path, array: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    _save_bytes(path, buffer.getvalue())


def _save_bytes(path: Path, data: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    try:
        with open(partial, "wb") as f:
            f.write(data)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def _save_text(path: Path, text: str) -> None:
    _save_bytes(path, text.encode())

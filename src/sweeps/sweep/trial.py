"""How a trial is built from its study, the same way wherever it is built again: its seed,
the space as its data makes it ("auto" choices decided), and transfer learning's starting
weights. The objective builds trials with it; `evaluate` and `diagnose` rebuild them with it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from sweeps.data.folds import Folds
from sweeps.engine.model import StackedMLP
from sweeps.engine.trained import load_model
from sweeps.errors import SweepsError
from sweeps.spec.params import Categorical, Int
from sweeps.spec.study import Study


def trial_seed(study_seed: int, trial_number: int) -> int:
    """Each trial's own seed: reproducible, different for every trial."""
    return int(np.random.SeedSequence([study_seed, trial_number]).generate_state(1)[0])


def transfer(spec: Study, n_features: int, n_outputs: int,
             columns: tuple[str, ...] | None = None) -> tuple[Study, StackedMLP | None]:
    """For `init_from`: the study with the saved model's architecture fixed, and its weights.

    Checked before anything is written: the saved model must take the same features (by
    name, in the same order, where both sides name them: `columns`, the data's) and give the
    same outputs as this study's data. Depth, width, the embeddings' shape and the ensemble
    size are the saved model's; the rest of the space (lr, ...) is searched.
    """
    if spec.init_from is None:
        return spec, None
    model = load_model(spec.init_from)
    if columns is not None and model.columns is not None and list(columns) != list(model.columns):
        same = sorted(columns) == sorted(model.columns)
        raise SweepsError(
            f"Study.init_from: {spec.init_from} was trained on columns {model.columns}, this study's data has "
            f"{list(columns)}; " + ("put the data's columns in the model's order" if same else
                                    "transfer needs the same features, named alike") + ".")
    net = model.net
    if net.n_inputs != n_features or net.n_outputs != n_outputs:
        raise SweepsError(
            f"Study.init_from: {spec.init_from} takes {net.n_inputs} features and gives "
            f"{net.n_outputs} outputs; this study's data has {n_features} features and needs "
            f"{n_outputs} outputs; transfer needs the same features and target.")
    if model.n_members > 1:
        raise SweepsError(f"Study.init_from: {spec.init_from} holds {model.n_members} models (an ensemble "
                          "of fold models or refits); transfer starts from one: save a model with "
                          "final_model=\"refit\".")
    if net.categories is not None:
        raise SweepsError(f"Study.init_from: {spec.init_from} embeds categorical columns (category_dim), whose "
                          "categories belong to its own data; transfer from a model with one-hot inputs "
                          "(category_dim=0).")
    architecture = net.architecture()
    freeze = spec.space.freeze
    most = max(freeze.choices) if isinstance(freeze, Categorical) else freeze.high
    if most > architecture["depth"]:
        raise SweepsError(f"Space.freeze: {spec.init_from} has {architecture['depth']} hidden layer(s); freeze at "
                          f"most {architecture['depth']} (the output layer always trains), got {most}.")
    fixed = {name: (Int(v, v) if isinstance(v, int) else Categorical([v])) for name, v in architecture.items()}
    space = dataclasses.replace(spec.space, **fixed)
    return dataclasses.replace(spec, space=space), net


def prepare(spec: Study, folds: Folds) -> tuple[Study, StackedMLP | None]:
    """The study as its trials see it: "auto" choices decided for the data, transfer's fixed architecture."""
    return transfer(spec.resolved(folds.n_numeric), folds.n_features, folds.n_outputs)

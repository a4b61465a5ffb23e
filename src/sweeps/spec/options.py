"""Every option a study can set, declared once.

`OPTIONS` has one row per network option: its kind, the scale a plain `(low, high)` tuple
takes, the values it may hold, what `Space()` searches or fixes when the study file does not
say (`default`), and what a configuration without it trains with (`fallback`: the "off"
value for the recipe's ingredients and remedies, so a trial stored by an older version
retrains as it did). `Space`'s fields, `engine.config.NetConfig`'s fields, the validation of
ranges and the options page of the docs all come from these rows; `tests/spec` checks that
`Space` and `NetConfig` agree with them.

The study's own settings that take one of a few names (task, preprocessing, final model,
stop, early stopping) are listed here too, so that every allowed value is written once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

REQUIRED = object()  # `fallback` of the options every configuration must name

TASKS = ("classification", "regression")
SCALINGS = ("auto", "standard", "robust", "quantile")  # Study.preprocessing (data/preprocess.py)
EXPORT_RULES = ("best", "one-se")  # python -m sweeps.export --rule (results/export.py)
FINAL_MODELS = ("auto", "folds", "refit", "refit-seeds", "ensemble")  # Study.final_model (results/final.py)
STOPS = (None, "converged")  # Study.stop
EARLY_STOPPING = ("mean", "worst_group")  # Study.early_stopping

# embedding="auto": "none" and "periodic" both searched (the folds' evidence decides) when the data
# has at most this many numeric columns, "none" beyond. Their cost grows with the numeric columns
# (a linear map of their own per column and row):
# on digits' 64 pixel columns they made a d1 w32 trial 10-20x slower (benchmarks/bench_engine.py),
# where 6 columns cost 3-5x per trial and a whole sweep on adult about 2x.
AUTO_EMBEDDING_MAX_NUMERIC = 32


@dataclass(frozen=True)
class Option:
    """One network option (see the module docstring)."""

    name: str
    kind: str  # "int", "float" or "choice"
    default: Any  # Space's when not given: a value, a (low, high) tuple, or a choice
    fallback: Any  # what a configuration without it trains with; REQUIRED: always named
    doc: str
    group: str  # the docs' section: "network", "training", "recipe" or "remedies"
    log: bool = False  # the scale of a plain (low, high) tuple
    valid: tuple[float, float] = (-math.inf, math.inf)  # numbers it may take (ints and floats)
    choices: tuple[str, ...] = ()  # kind "choice": the names it may take
    optional: bool = False  # left out of a trial's params while fixed at its fallback (off)
    periodic_only: bool = False  # searched only for a trial with embedding="periodic"

    @property
    def rule(self) -> str:
        """The valid values in words, for messages."""
        low, high = self.valid
        if high == 1.0 - 1e-9:
            return f"{low:g} <= {self.name} < 1"
        if math.isinf(high):
            return f"{self.name} >= {low:g}"
        return f"{low:g} <= {self.name} <= {high:g}"


_BELOW_ONE = 1.0 - 1e-9

OPTIONS_LIST: tuple[Option, ...] = (
    # The network and its optimizer: every configuration names these five.
    Option("depth", "int", (1, 4), REQUIRED, "hidden layers", "network", valid=(1, math.inf)),
    Option("width", "int", (16, 512), REQUIRED, "units per hidden layer, searched on a log scale: 16 -> 32 matters "
           "as much as 256 -> 512", "network", log=True, valid=(1, math.inf)),
    Option("dropout", "float", (0.0, 0.5), REQUIRED, "drop probability after each hidden layer", "network",
           valid=(0.0, _BELOW_ONE)),
    Option("weight_decay", "float", (1e-6, 1e-1), REQUIRED, "AdamW's decoupled weight decay", "network", log=True,
           valid=(0.0, math.inf)),
    Option("lr", "float", (1e-4, 1e-1), REQUIRED, "AdamW's learning rate", "network", log=True,
           valid=(1e-12, math.inf)),
    Option("batch_size", "int", 128, 128, "rows per step, in every fold", "training", valid=(1, math.inf)),
    # The methodology's remedies (docs: remedies).
    Option("class_weight", "choice", "none", "none", "classification: \"balanced\" weighs each class n / "
           "(classes x its count) in training; searching it scores every trial by the class-balanced loss",
           "remedies", choices=("none", "balanced"), optional=True),
    Option("resampling", "choice", "none", "none", "classification: \"over\" / \"under\"-sample the training rows "
           "to balanced classes, drawn afresh every epoch", "remedies", choices=("none", "over", "under"),
           optional=True),
    Option("importance", "choice", "none", "none", "with Study(target_data=): \"density_ratio\" weighs each "
           "training row by how much likelier it is under the target rows (a domain classifier, clipped)",
           "remedies", choices=("none", "density_ratio"), optional=True),
    Option("adversarial", "float", 0.0, 0.0, "with Study(target_data=): the weight of domain-adversarial "
           "training (DANN), e.g. (0.01, 1.0) to search it", "remedies", valid=(0.0, 100.0), optional=True),
    Option("noise", "float", 0.0, 0.0, "Gaussian input noise while training (std in standardized units), e.g. "
           "(0.0, 0.3)", "remedies", valid=(0.0, math.inf), optional=True),
    # The tabular-MLP recipe (docs: models).
    Option("embedding", "choice", "auto", "none", "\"periodic\": PLR embeddings of the numeric columns; \"auto\": "
           f"none and periodic searched for at most {AUTO_EMBEDDING_MAX_NUMERIC} numeric columns", "recipe",
           choices=("none", "periodic", "auto"), optional=True),
    Option("n_frequencies", "int", 16, 16, "periodic embeddings: frequencies per feature", "recipe",
           valid=(1, math.inf), periodic_only=True),
    Option("frequency_scale", "float", (0.01, 30.0), 1.0, "periodic embeddings: std of the initial frequencies",
           "recipe", log=True, valid=(1e-9, math.inf), periodic_only=True),
    Option("embedding_dim", "int", 16, 16, "periodic embeddings: outputs per feature", "recipe",
           valid=(1, math.inf), periodic_only=True),
    Option("category_dim", "int", 0, 0, "tables: each categorical column's categories as learned vectors of this "
           "size instead of one-hot inputs (RealMLP's and TabM's treatment of categories; 0: one-hot)", "recipe",
           valid=(0, 256), optional=True),
    Option("ensemble", "int", 1, 1, "members of the shared-weight ensemble (TabM-mini) in every fold-model",
           "recipe", valid=(1, 1024), optional=True),
    Option("label_smoothing", "float", 0.0, 0.0, "classification: training target smoothing (values stay "
           "unsmoothed)", "recipe", valid=(0.0, _BELOW_ONE), optional=True),
    Option("huber", "float", 0.0, 0.0, "regression: train on the Huber loss with this threshold (in target "
           "standard deviations: squared error within it, linear beyond, so outliers pull less), e.g. 1.0; "
           "trials are still scored by squared error; 0: squared error", "recipe", valid=(0.0, math.inf),
           optional=True),
    Option("beta2", "float", 0.95, 0.999, "AdamW's second-moment decay (0.999 for configurations that do not "
           "name it: the plain MLP of sweeps 0.1)", "recipe", valid=(0.0, _BELOW_ONE), optional=True),
    Option("schedule", "choice", "constant", "constant", "\"cosine\": warm-up, then cosine decay over max_epochs",
           "recipe", choices=("constant", "cosine"), optional=True),
    Option("grad_clip", "float", 0.0, 0.0, "per fold-model gradient-norm limit; 0: off", "recipe",
           valid=(0.0, math.inf), optional=True),
    Option("freeze", "int", 0, 0, "with Study(init_from=): the first hidden layers kept as loaded, e.g. (0, 2) to "
           "search between fine-tuning everything and feature extraction", "remedies", valid=(0, math.inf),
           optional=True),
)

OPTIONS: dict[str, Option] = {option.name: option for option in OPTIONS_LIST}
PARAMS: tuple[str, ...] = tuple(OPTIONS)  # suggestion order: `embedding` before the settings that depend on it
CLASS_WEIGHTS = OPTIONS["class_weight"].choices


def fallbacks() -> dict[str, Any]:
    """What a configuration without an option trains with, for every option that has one."""
    return {o.name: o.fallback for o in OPTIONS_LIST if o.fallback is not REQUIRED}


def table_markdown() -> str:
    """The options page's table, written from the rows (docs/options.md is built from it)."""
    def shown(value: Any) -> str:
        if value is REQUIRED:
            return "(always named)"
        return f"`{value!r}`"

    lines = []
    for group, title in (("network", "The network"), ("training", "Training"), ("recipe", "The tabular-MLP recipe"),
                         ("remedies", "The methodology's remedies")):
        lines += [f"### {title}", "", "| option | kind | default in `Space` | without it | valid | what it does |",
                  "|---|---|---|---|---|---|"]
        for o in (o for o in OPTIONS_LIST if o.group == group):
            kind = o.kind + (", log scale" if o.log else "")
            valid = " / ".join(f"`{c!r}`" for c in o.choices) if o.kind == "choice" else f"`{o.rule}`"
            doc = o.doc.replace("|", "\\|") + (" (only with `embedding=\"periodic\"`)" if o.periodic_only else "")
            lines.append(f"| `{o.name}` | {kind} | {shown(o.default)} | {shown(o.fallback)} | {valid} | {doc} |")
        lines.append("")
    return "\n".join(lines)

"""sweeps: hyperparameter sweeps for PyTorch MLPs, scored by k-fold validation loss.

A study file declares a `Study`; `python -m sweeps.run STUDY_FILE` runs it.

Example:
    >>> from sklearn.datasets import load_digits
    >>> from sweeps import Study, Space
    >>> study = Study(name="digits", task="classification",
    ...               data=lambda: load_digits(return_X_y=True),
    ...               space=Space(depth=(1, 4), width=(16, 512)))
"""

# Names are imported on first use (PEP 562): `from sweeps import Study` costs what it needs,
# and a process that only supervises workers (`sweeps.launcher`) never loads torch.
_WHERE = {
    "api": "sweeps.api", "optimize": "sweeps.api", "SweepsError": "sweeps.errors", "AnyPruner": "sweeps.pruners",
    "FoldPairedPruner": "sweeps.pruners", "Categorical": "sweeps.study", "Float": "sweeps.study",
    "Int": "sweeps.study", "Space": "sweeps.study", "Study": "sweeps.study", "Table": "sweeps.table",
    "TrainedModel": "sweeps.trained", "load_model": "sweeps.trained",
}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'sweeps' has no attribute {name!r}")
    import importlib

    module = importlib.import_module(_WHERE[name])
    value = module if name == "api" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_WHERE))


__version__ = "0.2.0"

__all__ = [
    "AnyPruner", "Categorical", "Float", "FoldPairedPruner", "Int", "Space", "Study", "SweepsError", "Table",
    "TrainedModel", "__version__", "api", "load_model", "optimize",
]

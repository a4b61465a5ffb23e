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
    "api": "sweeps.api", "optimize": "sweeps.api", "SweepsError": "sweeps.errors", "AnyPruner": "sweeps.sweep.pruners",
    "AfterStartup": "sweeps.sweep.pruners",
    "FoldPairedPruner": "sweeps.sweep.pruners", "Categorical": "sweeps.spec.params", "Float": "sweeps.spec.params",
    "Int": "sweeps.spec.params", "Space": "sweeps.spec.space", "Study": "sweeps.spec.study",
    "Table": "sweeps.spec.table", "load_study": "sweeps.spec.study", "TrainedModel": "sweeps.engine.trained",
    "load_model": "sweeps.engine.trained",
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


__version__ = "0.3.0"


def _interrupts_in_one_line() -> None:
    """`python -m sweeps.<verb>`: a Ctrl+C while the command is still starting (importing torch
    takes seconds, and a worker starts the same way) ends it in one line, as one that comes
    later does, not with a traceback of whatever module was being imported. Only uncaught
    interrupts reach this hook: once a verb runs, `_cli.guarded` handles them itself."""
    import os
    import sys

    previous = sys.excepthook

    def hook(kind, value, traceback) -> None:
        if not issubclass(kind, KeyboardInterrupt):
            return previous(kind, value, traceback)
        if not sys.argv[0].endswith("worker.py"):  # a worker's launcher says it for all of them
            print("\nsweeps: interrupted; every finished trial is kept in storage.", file=sys.stderr, flush=True)
        os._exit(143 if kind.__name__ == "Terminated" else 130)

    sys.excepthook = hook


# While `python -m sweeps.X` locates its module, Python sets argv[0] to "-m" (then to the
# module's path): only the command line installs the hook, never `import sweeps` in a program.
if __import__("sys").argv[:1] == ["-m"]:
    _interrupts_in_one_line()

__all__ = [
    "AfterStartup", "AnyPruner", "Categorical", "Float", "FoldPairedPruner", "Int", "Space", "Study", "SweepsError",
    "Table", "TrainedModel", "__version__", "api", "load_model", "load_study", "optimize",
]

"""sweeps: hyperparameter sweeps for PyTorch MLPs, scored by k-fold validation loss.

A study file declares a `Study`; `python -m sweeps.run STUDY_FILE` runs it.

Example:
    >>> from sklearn.datasets import load_digits
    >>> from sweeps import Study, Space
    >>> study = Study(name="digits", task="classification",
    ...               data=lambda: load_digits(return_X_y=True),
    ...               space=Space(depth=(1, 4), width=(16, 512)))
"""

from sweeps import api
from sweeps.api import optimize
from sweeps.errors import SweepsError
from sweeps.pruners import AnyPruner, FoldPairedPruner
from sweeps.study import Categorical, Float, Int, Space, Study
from sweeps.table import Table
from sweeps.trained import TrainedModel, load_model

__version__ = "0.2.0"

__all__ = [
    "AnyPruner", "Categorical", "Float", "FoldPairedPruner", "Int", "Space", "Study", "SweepsError", "Table",
    "TrainedModel", "__version__", "api", "load_model", "optimize",
]

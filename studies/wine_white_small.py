"""White wine quality from only 400 white wines, trained from scratch.

The baseline for studies/wine_white_transfer.py, which starts from the red-wine model:
compare their CV losses (python -m sweeps.run on both) to see what transfer is worth.
"""

import numpy as np

from sweeps import Space, Study, Table

COLUMNS = ["fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
           "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol", "quality"]
white = Table("data/winequality-white.csv.gz", target="quality", columns=COLUMNS)


def few_white_wines():
    X, y = white()
    rows = np.random.default_rng(0).choice(len(y), 400, replace=False)  # a small target dataset
    return X.iloc[rows], y.iloc[rows]


study = Study(
    name="wine_white_small",
    task="regression",
    data=few_white_wines,
    space=Space(depth=(1, 3), width=(16, 256), dropout=(0.0, 0.3), weight_decay=(1e-6, 1e-2),
                lr=(1e-4, 1e-2), batch_size=32),
    folds=5, max_epochs=100, patience=10, n_trials=20, seed=0,
)

"""White wine quality from only 400 white wines, fine-tuned from the red-wine model.

Transfer learning: every net starts from storage/wine_red-model.pt (made by
`python -m sweeps.evaluate studies/wine_red.py`) and is fine-tuned; its depth and width are
the red model's, and the fine-tuning learning rate (with dropout and weight decay) is
searched. Compare with studies/wine_white_small.py, the same data trained from scratch.
"""

import numpy as np

from sweeps import Space, Study, Table

COLUMNS = ["fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
           "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol", "quality"]
white = Table("data/winequality-white.csv.gz", target="quality", columns=COLUMNS)


def few_white_wines():
    X, y = white()
    rows = np.random.default_rng(0).choice(len(y), 400, replace=False)  # the same 400 as wine_white_small
    return X.iloc[rows], y.iloc[rows]


study = Study(
    name="wine_white_transfer",
    task="regression",
    data=few_white_wines,
    init_from="storage/wine_red-model.pt",
    space=Space(dropout=(0.0, 0.3), weight_decay=(1e-6, 1e-2), lr=(1e-5, 3e-3), batch_size=32),
    folds=5, max_epochs=100, patience=10, n_trials=20, seed=0,
)

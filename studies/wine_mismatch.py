"""A train/test mismatch on purpose: sweep on red wines, test on white wines.

Wine quality (UCI, Cortez et al. 2009): 11 physico-chemical measurements, quality score
3-9 as a regression target. Red and white wines differ (a classifier tells them apart with
AUC 0.997), so a model chosen on red wines loses accuracy on white ones. After

    python -m sweeps.run studies/wine_mismatch.py
    python -m sweeps.evaluate studies/wine_mismatch.py
    python -m sweeps.diagnose studies/wine_mismatch.py

the diagnosis reports the mismatch, with its evidence and remedies.
"""

from sweeps import Space, Study, Table

COLUMNS = ["fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
           "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol", "quality"]

red = Table("data/winequality-red.csv.gz", target="quality", columns=COLUMNS)
white = Table("data/winequality-white.csv.gz", target="quality", columns=COLUMNS)

study = Study(
    name="wine_mismatch",
    task="regression",
    data=red,
    test_data=white,
    space=Space(depth=(1, 3), width=(16, 256), dropout=(0.0, 0.3), weight_decay=(1e-6, 1e-2),
                lr=(3e-4, 1e-2), batch_size=64),
    folds=5,
    max_epochs=100,
    patience=10,
    n_trials=20,
    seed=0,
)

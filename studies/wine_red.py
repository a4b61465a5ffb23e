"""Red wine quality (UCI Wine Quality, 1,599 red wines): the source model for transfer.

Run and evaluate it first; `evaluate` saves storage/wine_red-model.pt, which
studies/wine_white_transfer.py fine-tunes on white wines:

    python -m sweeps.run studies/wine_red.py && python -m sweeps.evaluate studies/wine_red.py
"""

from sweeps import Space, Study, Table

COLUMNS = ["fixed acidity", "volatile acidity", "citric acid", "residual sugar", "chlorides",
           "free sulfur dioxide", "total sulfur dioxide", "density", "pH", "sulphates", "alcohol", "quality"]

study = Study(
    name="wine_red",
    task="regression",
    data=Table("data/winequality-red.csv.gz", target="quality", columns=COLUMNS),
    space=Space(depth=(1, 3), width=(16, 256), dropout=(0.0, 0.3), weight_decay=(1e-6, 1e-2),
                lr=(3e-4, 1e-2), batch_size=64, noise=(0.0, 0.3)),  # input-noise augmentation, searched
    folds=5, max_epochs=100, patience=10, n_trials=20, seed=0,
    final_model="refit",  # one net: what wine_white_transfer.py starts from
)

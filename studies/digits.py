"""Handwritten digits (scikit-learn's bundled 8x8 images, 1,797 rows, 10 classes)."""

from sklearn.datasets import load_digits

from sweeps import Space, Study

study = Study(
    name="digits",
    task="classification",
    data=lambda: load_digits(return_X_y=True),
    space=Space(
        depth=(1, 4),  # hidden layers
        width=(16, 512),  # units per hidden layer, searched on a log scale
        dropout=(0.0, 0.5),
        weight_decay=(1e-6, 1e-1),  # log scale
        lr=(1e-4, 1e-1),  # log scale
    ),
    folds=5,
    max_epochs=100,
    patience=10,
    test_size=0.2,  # 360 rows held out for one final look (python -m sweeps.evaluate)
    n_trials=50,
    seed=0,
)

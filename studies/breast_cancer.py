"""Breast cancer Wisconsin (scikit-learn's bundled set, 569 rows, 30 features, 2 classes)."""

from sklearn.datasets import load_breast_cancer

from sweeps import Space, Study

study = Study(
    name="breast_cancer",
    task="classification",
    data=lambda: load_breast_cancer(return_X_y=True),
    space=Space(depth=(1, 3), width=(8, 256), dropout=(0.0, 0.5),
                weight_decay=(1e-6, 1e-1), lr=(1e-4, 1e-1), batch_size=64),
    folds=5,
    max_epochs=100,
    patience=10,
    test_size=0.2,
    n_trials=30,
    seed=0,
)

"""Diabetes progression (scikit-learn's bundled set, 442 rows, 10 features, regression).

The loss is the MSE of the standardized target (about 1 - R^2); the metric is RMSE in the
target's own units.
"""

from sklearn.datasets import load_diabetes

from sweeps import Space, Study

study = Study(
    name="diabetes",
    task="regression",
    data=lambda: load_diabetes(return_X_y=True),
    space=Space(depth=(1, 3), width=(8, 256), dropout=(0.0, 0.5),
                weight_decay=(1e-6, 1e-1), lr=(1e-4, 1e-1), batch_size=32),
    folds=5,
    max_epochs=200,
    patience=20,
    test_size=0.2,
    n_trials=30,
    seed=0,
)

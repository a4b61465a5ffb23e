"""Mammography (OpenML / Woods et al. 1993): find the 260 malignant cases among 11,183 (2.3 %).

Class imbalance, the methodology's case for re-sampling: the search decides whether each
class should weigh n / (classes x count) in the loss (`class_weight`), and every trial
records balanced accuracy and macro-F1 beside accuracy, which alone would reward
predicting "benign" for everyone (97.7 %).
"""

from sweeps import Categorical, Space, Study, Table

study = Study(
    name="mammography",
    task="classification",
    data=Table("data/mammography.csv.gz", target="class", columns=[f"x{i}" for i in range(1, 7)] + ["class"]),
    space=Space(depth=(1, 3), width=(16, 128), dropout=(0.0, 0.3), weight_decay=(1e-6, 1e-2),
                lr=(3e-4, 1e-2), batch_size=128, class_weight=Categorical(["none", "balanced"])),
    folds=5, max_epochs=60, patience=8, n_trials=20, seed=0,
)

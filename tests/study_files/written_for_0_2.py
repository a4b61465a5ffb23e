"""A study file as users wrote them for sweeps 0.2: it must run unchanged on every later version.

Every public name of 0.2 and its options: plain tuples, Float/Int/Categorical, a Table with
columns, class weights searched, a fold-paired pruner combined with Optuna's median pruner,
the converged stop, the recipe's ingredients and the final model.
"""

import optuna

from sweeps import AnyPruner, Categorical, Float, FoldPairedPruner, Int, Space, Study, Table

COLUMNS = ["x1", "x2", "x3", "x4", "x5", "x6", "class"]

study = Study(
    name="written-for-0.2",
    task="classification",
    data=Table("../../studies/data/mammography.csv.gz", target="class", columns=COLUMNS),
    space=Space(depth=(1, 2), width=Int(16, 64, log=True), dropout=(0.0, 0.3), weight_decay=(1e-6, 1e-2),
                lr=Float(1e-3, 1e-2, log=True), batch_size=256, class_weight=Categorical(["none", "balanced"]),
                embedding="auto", beta2=0.95, schedule="cosine", grad_clip=1.0, label_smoothing=0.0),
    folds=3, max_epochs=3, patience=2, test_size=0.2, n_trials=2, seed=0,
    pruner=AnyPruner(optuna.pruners.MedianPruner(n_startup_trials=1), FoldPairedPruner(n_startup_trials=1)),
    stop="converged", preprocessing="auto", final_model="folds",
)

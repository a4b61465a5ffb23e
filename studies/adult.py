"""Census income (UCI Adult): does a person earn more than $50K a year?

32,561 training rows of 14 mixed-type columns with missing values (`?`); the official test
split (16,281 rows) is the held-out test set, so the sweep never sees it. Reference points
(README of the data): logistic regression and scikit-learn's MLP reach 0.853 test accuracy,
gradient boosting 0.873; LCBench's best of 2000 MLP configurations about 0.83.
"""

from sweeps import Space, Study, Table

COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status", "occupation",
           "relationship", "race", "sex", "capital-gain", "capital-loss", "hours-per-week",
           "native-country", "income"]

train = Table("data/adult-train.csv.gz", target="income", columns=COLUMNS)
test = Table("data/adult-test.csv.gz", target="income", columns=COLUMNS)


def official_test():
    X, y = test()
    return X, y.str.rstrip(".")  # the test file writes labels as ">50K." and "<=50K."


study = Study(
    name="adult",
    task="classification",
    data=train,
    test_data=official_test,
    space=Space(depth=(1, 3), width=(16, 256), dropout=(0.0, 0.5), weight_decay=(1e-6, 1e-2),
                lr=(3e-4, 1e-2), batch_size=256),
    folds=5,
    max_epochs=30,
    patience=4,
    n_trials=20,
    seed=0,
)

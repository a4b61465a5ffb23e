"""Rows to folds: the dataset and its held-out split, per-fold preprocessing, the stacked
folds (copies or one shared copy of the rows), the cache of prepared folds, and importance
weights. Imports `spec` only. Internal.
"""

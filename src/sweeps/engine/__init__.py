"""The training engine, torch only: stacked networks and their layers, the optimizer, the
loop that trains every fold (and several trials) together, and saved models. Imports `data`
(the stacked folds) and `spec` (the options' fallbacks). Internal; `sweeps.load_model` and
`sweeps.TrainedModel` are the public names.
"""

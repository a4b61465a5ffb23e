"""Running the search: the run loop, the objective (one trial, or several in one stack),
samplers and pruners, the converged stop, Ctrl+C and SIGTERM, workers and their launcher.
Internal; `sweeps.optimize`, `sweeps.FoldPairedPruner` and `sweeps.AnyPruner` are the public names.
"""

"""What a study file declares: the options (one row each), parameter types, `Space`, `Study`
and `Table`. The ground floor: it imports nothing of sweeps but `errors`.

Users import these names from `sweeps` itself; the modules here are internal.
"""

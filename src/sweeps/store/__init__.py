"""Everything written to Optuna's storage: opening storage URLs and explaining their failures,
the record of trials and studies (the only writer of user attrs), the dashboard's notes, and
the one place that reaches into Optuna's private attributes. Internal.
"""

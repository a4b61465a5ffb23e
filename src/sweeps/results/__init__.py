"""After the sweep: export, the final model and its one evaluation on the held-out rows, the
diagnosis of what limits the model (with its baselines), and ONNX. Internal; `sweeps.api`
is the public way in.
"""

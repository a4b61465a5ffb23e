"""sweeps from Python: notebooks and scripts call what the command-line verbs call.

    >>> import sweeps
    >>> study = sweeps.optimize("studies/digits.py", n_trials=20)      # doctest: +SKIP
    >>> sweeps.api.export("studies/digits.py")["params"]               # doctest: +SKIP
    >>> result, model = sweeps.api.evaluate("studies/digits.py")       # doctest: +SKIP
    >>> model.predict(X)                                               # doctest: +SKIP

(`export`, `evaluate` and `diagnose` live in `sweeps.api`: `sweeps.evaluate` and its
siblings are the command-line modules, `python -m sweeps.evaluate`.)

Each function takes a study file's path or a `Study` object, raises `SweepsError` with the
same one-line message the command line prints, and returns what the verb reports: the
Optuna study, the export document, the test result and the model, the diagnosis. The
progress bar is tqdm's, which draws a widget in Jupyter.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, TextIO

import optuna

from sweeps.errors import SweepsError
from sweeps.study import Study, load_study_file


def _spec(study: Study | str | Path, **changes: Any) -> tuple[Study, str | None]:
    if isinstance(study, Study):
        spec, path = study, None
    elif isinstance(study, (str, Path)):
        spec, path = load_study_file(study), str(study)
    else:
        raise SweepsError(f"expected a Study or the path of a study file, got {type(study).__name__}.")
    changes = {k: v for k, v in changes.items() if v is not None}
    return (spec.replace(**changes) if changes else spec), path


def _dataset(spec: Study):
    from sweeps.data import load_dataset

    try:
        return load_dataset(spec)
    except SweepsError:
        raise
    except Exception as e:  # the user's loader raised
        raise SweepsError(f"the data loader failed: {type(e).__name__}: {e}") from None


def _device(name: str) -> str:
    from sweeps._cli import resolve_device

    return str(resolve_device(name))


def optimize(study: Study | str | Path, *, n_trials: int | None = None, timeout: float | None = None,
             storage: str | None = None, seed: int | None = None, device: str = "auto", workers: int = 1,
             until_converged: bool | None = None, reproducible: bool = False, batch: int | None = None,
             progress: bool = True, out: TextIO = sys.stdout) -> optuna.Study:
    """Run or resume a sweep, as `python -m sweeps.run`; returns the Optuna study.

    `n_trials` runs that many more trials than the study has (like `--n-trials`); without it
    the study file's `n_trials` is the target. `workers` > 1 needs a study file's path.
    `batch`: trials asked at a time and trained in one stack (like `--batch`).
    """
    from sweeps._cli import quiet_optuna
    from sweeps.run import run_study

    spec, path = _spec(study, seed=seed)
    if batch is not None and not 1 <= batch <= 64:
        raise SweepsError(f"batch must be between 1 and 64, got {batch}.")
    if workers > 1 and path is None:
        raise SweepsError("workers > 1 need the study file's path (each worker loads it itself), not a Study object.")
    quiet_optuna()
    return run_study(spec, _dataset(spec), storage=storage, n_trials=n_trials, timeout=timeout,
                     device=_device(device), progress=progress, out=out, workers=workers, study_file=path,
                     overrides={"seed": seed} if seed is not None else {}, until_converged=until_converged,
                     reproducible=reproducible, batch=batch)


def export(study: Study | str | Path, *, rule: str = "best", top: int = 1, output: str | Path | None = None,
           format: str = "json", storage: str | None = None) -> dict[str, Any]:  # noqa: A002 - the CLI's name
    """Write the chosen configuration, as `python -m sweeps.export`; returns the document."""
    from sweeps.export import default_path, export_config, write_config
    from sweeps.storage import attach, load_existing_study

    spec, _ = _spec(study)
    stored, url = load_existing_study(spec.name, storage)
    document = export_config(stored, url, top, rule)
    path = write_config(document, Path(output) if output else default_path(spec.name, url, format), format)
    attach(stored, path, url)
    return document


def evaluate(study: Study | str | Path, *, config: str | Path | None = None, storage: str | None = None,
             output: str | Path | None = None, device: str = "auto", out: TextIO = sys.stdout):
    """Train the declared final model and score the held-out rows once, as `python -m sweeps.evaluate`.

    Returns `(result, model)`: the recorded test result (a dict) and the `TrainedModel`.
    """
    from sweeps.evaluate import evaluate_study

    spec, _ = _spec(study)
    return evaluate_study(spec, _dataset(spec), storage=storage, config_path=str(config) if config else None,
                          model_path=str(output) if output else None, device=_device(device), out=out)


def diagnose(study: Study | str | Path, *, storage: str | None = None, output: str | Path | None = None,
             thresholds=None, device: str = "auto", out: TextIO = sys.stdout):
    """What limits the model, as `python -m sweeps.diagnose`; returns the `Diagnosis`."""
    from sweeps.diagnose import Thresholds, diagnose_study

    spec, _ = _spec(study)
    return diagnose_study(spec, _dataset(spec), storage=storage, thresholds=thresholds or Thresholds(),
                          device=_device(device), output=str(output) if output else None, out=out)

"""sweeps from Python: notebooks and scripts call what the command-line verbs call.

    >>> import sweeps
    >>> study = sweeps.optimize("studies/digits.py", n_trials=20)      # doctest: +SKIP
    >>> sweeps.api.export("studies/digits.py")["params"]               # doctest: +SKIP
    >>> result, model = sweeps.api.evaluate("studies/digits.py")       # doctest: +SKIP
    >>> model.predict(X)                                               # doctest: +SKIP
    >>> sweeps.api.export_onnx("studies/digits.py")                    # doctest: +SKIP
    >>> sweeps.api.held_out_rows("studies/digits.py")                  # doctest: +SKIP

(`export`, `evaluate` and `diagnose` live in `sweeps.api`: `sweeps.evaluate` and its
siblings are the command-line modules, `python -m sweeps.evaluate`.)

Each function takes a study file's path or a `Study` object, raises `SweepsError` with the
same one-line message the command line prints, and returns what the verb reports: the
Optuna study, the export document, the test result and the model, the diagnosis. The run
options are `sweeps.sweep.optimize.RunOptions`, checked there for both doors. The progress
bar is tqdm's, which draws a widget in Jupyter.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, TextIO

import optuna

from sweeps import _cli
from sweeps.errors import STDOUT, SweepsError
from sweeps.follow.loop import DEFAULT_ROUNDS, FollowResult, follow_study
from sweeps.results.diagnose import Diagnosis, Thresholds, diagnose_study
from sweeps.results.evaluate import evaluate_study, report
from sweeps.results.export import export_onnx_model, export_study
from sweeps.results.export import held_out_rows as _held_out_rows
from sweeps.spec.study import Study, load_study_file
from sweeps.store.storage import load_existing_study
from sweeps.sweep.optimize import RunOptions, run_study



def _spec(study: Study | str | Path, **changes: Any) -> tuple[Study, str | None]:
    if isinstance(study, Study):
        spec, path = study, None
    elif isinstance(study, (str, Path)):
        spec, path = load_study_file(study), str(study)
    else:
        raise SweepsError(f"expected a Study or the path of a study file, got {type(study).__name__}.")
    changes = {k: v for k, v in changes.items() if v is not None}
    return (spec.replace(**changes) if changes else spec), path


def _dataset(spec: Study, path: str | None = None):
    return _cli.load_data(path or f"study '{spec.name}'", spec)


def optimize(study: Study | str | Path, *, n_trials: int | None = None, timeout: float | None = None,
             storage: str | None = None, seed: int | None = None, device: str = "auto", workers: int = 1,
             stop: str | None = None, reproducible: bool = False, batch: int | None = None,
             progress: bool = True, out: TextIO = STDOUT, until_converged: bool | None = None,
             follow: bool = False, rounds: int | None = None) -> optuna.Study | FollowResult:
    """Run or resume a sweep, as `python -m sweeps.run`; returns the Optuna study.

    `n_trials` runs that many more trials than the study has (like `--n-trials`); without it
    the study file's `n_trials` is the target. `workers` > 1 needs a study file's path.
    `batch`: trials asked at a time and trained in one stack (like `--batch`). `stop="converged"`
    also ends the study when further trials are unlikely to matter (`until_converged=True`
    is its older name, kept working).

    `follow=True` (a study file's path): as `--follow`, diagnose, apply the remedy as a new study
    file, run it, and go on while rounds help (at most `rounds`, default 4); the winner is
    scored once on the held-out rows. Returns the `sweeps.follow.loop.FollowResult` then: its
    `rounds`, `winner`, `stop_reason`, `test_result`, `mismatch` and `report`.
    """
    if until_converged is not None:
        warnings.warn("sweeps.optimize(until_converged=True) is now stop=\"converged\"; the old name keeps working.",
                      DeprecationWarning, stacklevel=2)
        stop = stop or ("converged" if until_converged else None)
    options = RunOptions(n_trials=n_trials, timeout=timeout, device=str(_cli.resolve_device(device)),
                         workers=workers, batch=batch, reproducible=reproducible, stop=stop, progress=progress)
    spec, path = _spec(study, seed=seed)
    _cli.quiet_optuna()
    if rounds is not None and not follow:
        raise SweepsError("rounds= counts the rounds of follow=True; pass follow=True, or drop rounds.")
    if follow:
        if path is None:
            raise SweepsError("follow=True writes each round as a study file beside the first: pass the study file's "
                              "path, not a Study object.")
        return follow_study(spec, _dataset(spec, path), options, study_file=path, storage=storage,
                            rounds=rounds if rounds is not None else DEFAULT_ROUNDS,
                            overrides={"seed": seed} if seed is not None else {}, out=out)
    return run_study(spec, _dataset(spec, path), options, storage=storage, study_file=path,
                     overrides={"seed": seed} if seed is not None else {}, out=out)


def export(study: Study | str | Path, *, rule: str = "best", top: int = 1, output: str | Path | None = None,
           format: str = "json", storage: str | None = None) -> dict[str, Any]:  # noqa: A002 - the CLI's name
    """Write the chosen configuration, as `python -m sweeps.export`; returns the document."""
    spec, _ = _spec(study)
    stored, url = load_existing_study(spec.name, storage)
    document, _ = export_study(stored, url, top=top, rule=rule, output=output, fmt=format)
    return document


def export_onnx(study: Study | str | Path, *, model_file: str | Path | None = None, output: str | Path | None = None,
                storage: str | None = None) -> Path:
    """The model `evaluate` saved, as an ONNX graph checked against `load_model` with onnxruntime,
    as `python -m sweeps.export STUDY_FILE --model onnx`; returns the graph's path."""
    spec, path = _spec(study)
    stored, url = load_existing_study(spec.name, storage)
    _, written, _ = export_onnx_model(_dataset(spec, path), stored, url, model_file, output)
    return written


def held_out_rows(study: Study | str | Path):
    """The positions (from 0, sorted) of the rows `evaluate` scores, to score another tool on the
    same rows: positions in the rows the study's `data` returns, or, for a study with
    `test_data=`, in the rows of `test_data` (all of them). Nothing is scored, and the test
    set's use is not counted: only which rows, not their score, leaves the study."""
    spec, path = _spec(study)
    rows, _ = _held_out_rows(_dataset(spec, path), spec.test_data is not None)
    return rows


def evaluate(study: Study | str | Path, *, config: str | Path | None = None, storage: str | None = None,
             output: str | Path | None = None, device: str = "auto", out: TextIO | None = STDOUT):
    """Train the declared final model and score the held-out rows once, as `python -m sweeps.evaluate`
    (the report printed to `out`, unless it is None).

    Returns `(result, model)`: the recorded test result (a dict) and the `TrainedModel`.
    """
    spec, _ = _spec(study)
    entry, model = evaluate_study(spec, _dataset(spec), storage=storage,
                                  config_path=str(config) if config else None,
                                  model_path=str(output) if output else None, device=str(_cli.resolve_device(device)))
    if out is not None:
        print(report(spec, entry), file=out)
    return entry, model


def diagnose(study: Study | str | Path, *, storage: str | None = None, output: str | Path | None = None,
             thresholds: Thresholds | None = None, device: str = "auto", out: TextIO | None = STDOUT
             ) -> Diagnosis:
    """What limits the model, as `python -m sweeps.diagnose` (the report printed to `out`, unless
    it is None); returns the `Diagnosis`."""
    spec, _ = _spec(study)
    diagnosis = diagnose_study(spec, _dataset(spec), storage=storage, thresholds=thresholds or Thresholds(),
                               device=str(_cli.resolve_device(device)), output=str(output) if output else None)
    if out is not None:
        print(diagnosis.report, file=out)
    return diagnosis

"""`python -m sweeps.export STUDY_FILE`: write the chosen configuration to a file.

    python -m sweeps.export studies/digits.py [--format json|yaml] [--output PATH]
                                              [--storage URL] [--top K]

The file holds the best trial's hyperparameters, its CV loss with the per-fold spread and
metric, the median best epoch, the study's name, settings, data and test fingerprints, and
the versions of sweeps, optuna and torch: enough for `python -m sweeps.evaluate --config`
or another person to use it. `--top K` lists the K best complete trials instead (the first
is the one `evaluate --config` uses).
"""

from __future__ import annotations

import datetime
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from sweeps import __version__, _cli
from sweeps.errors import SweepsError
from sweeps.storage import check_writable, describe, load_existing_study, output_path, write_text_atomic
from sweeps.study import check_config, load_study_file

FORMAT = "sweeps-config-1"


def trial_entry(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """One trial's configuration and the evidence for it."""
    a = trial.user_attrs
    best_epochs = a.get("best_epochs") or [1]
    return {
        "trial": trial.number,
        "params": dict(trial.params),
        "cv_loss": trial.value,
        "cv_loss_std": a.get("cv_loss_std"),
        "fold_val_losses": a.get("fold_val_losses"),
        "train_loss": a.get("train_loss"),
        "metric_name": a.get("metric_name"),
        "metric": a.get("metric"),
        "metric_std": a.get("metric_std"),
        "fold_metrics": a.get("fold_metrics"),
        "best_epochs": best_epochs,
        "median_best_epoch": max(1, int(np.median(best_epochs))),
        "n_params": a.get("n_params"),
    }


def export_config(study: optuna.Study, url: str, top: int = 1) -> dict[str, Any]:
    """The export document of `study`: its `top` best complete trials, best first."""
    complete = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))]
    if not complete:
        raise SweepsError(f"study '{study.study_name}' has no completed trial yet; run the sweep first.")
    ranked = sorted(complete, key=lambda t: t.value)[:top]
    best = trial_entry(ranked[0])
    settings = study.user_attrs.get("settings", {})
    return {
        "format": FORMAT,
        "study": study.study_name,
        "storage": describe(url),
        "exported_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "task": settings.get("task"),
        "seed": settings.get("seed"),
        "settings": settings,
        "fingerprint": study.user_attrs.get("fingerprint"),
        "versions": {"sweeps": __version__, "optuna": optuna.__version__, "torch": str(torch.__version__)},
        "params": dict(best["params"]),  # a copy: YAML would write an alias for a shared dict
        "median_best_epoch": best["median_best_epoch"],
        "trials": [best] + [trial_entry(t) for t in ranked[1:]],
    }


def write_config(document: dict[str, Any], path: Path, fmt: str) -> Path:
    check_writable(path, "exported configuration")
    if fmt == "yaml":
        import yaml

        text = yaml.safe_dump(document, sort_keys=False)
    else:
        text = json.dumps(document, indent=2) + "\n"
    return write_text_atomic(path, text)


def read_config(path: str | Path) -> dict[str, Any]:
    """An exported configuration file (JSON or YAML), checked for shape."""
    path = Path(path)
    if not path.is_file():
        raise SweepsError(f"{path}: no such config file; python -m sweeps.export STUDY_FILE writes one.")
    text = path.read_text()
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            document = yaml.safe_load(text)
        else:
            document = json.loads(text)
    except Exception as e:
        raise SweepsError(f"{path}: cannot be parsed ({type(e).__name__}: {e}).") from None
    if not isinstance(document, dict) or "params" not in document:
        raise SweepsError(f"{path}: not a sweeps config file (no 'params'); export one with "
                          "python -m sweeps.export STUDY_FILE.")
    document["params"] = check_config(document["params"], where=f"{path}: params")
    epochs = document.get("median_best_epoch")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise SweepsError(f"{path}: median_best_epoch must be a positive integer, got {epochs!r}.")
    return document


def default_path(study_name: str, url: str, fmt: str) -> Path:
    """Next to the SQLite database, or under storage/ for a server URL."""
    return output_path(url, study_name, f"-best.{fmt}")


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("python -m sweeps.export", "Export the best configuration of a study.")
    p.add_argument("--format", choices=("json", "yaml"), default=None,
                   help="file format (default: from --output's suffix, else json)")
    p.add_argument("--output", metavar="PATH", help="where to write (default: storage/<name>-best.<format>)")
    p.add_argument("--top", type=int, default=1, metavar="K", help="list the K best trials")
    args = p.parse_args(argv)

    def body() -> int:
        if args.top < 1:
            raise SweepsError(f"--top must be >= 1, got {args.top}.")
        _cli.quiet_optuna()
        spec = load_study_file(args.study_file)
        study, url = load_existing_study(spec.name, args.storage)
        fmt = args.format or ("yaml" if args.output and Path(args.output).suffix in (".yaml", ".yml") else "json")
        document = export_config(study, url, args.top)
        path = write_config(document, Path(args.output) if args.output else default_path(spec.name, url, fmt), fmt)
        best = document["trials"][0]
        print(f"Exported {len(document['trials'])} trial(s) of '{spec.name}' to {path}")
        print(f"Best trial #{best['trial']}: cv_loss {best['cv_loss']:.4f} ± {best['cv_loss_std']:.4f}, "
              f"{best['metric_name']} {best['metric']:.4f}, median best epoch {best['median_best_epoch']}")
        return 0

    return _cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())

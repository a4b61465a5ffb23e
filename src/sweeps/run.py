"""`python -m sweeps.run STUDY_FILE`: run (or resume) a sweep and summarise it.

    python -m sweeps.run studies/digits.py [--n-trials N] [--timeout S] [--storage URL]
                                           [--seed N] [--device auto|cpu|cuda] [--workers N]
                                           [--cluster dask://HOST:PORT] [--batch P] [--stop converged]

The command: arguments in, `sweeps.sweep.optimize.run_study` called, its summary printed.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING

from sweeps import _args

if TYPE_CHECKING:
    import optuna


def summary(study: optuna.Study, url: str, seconds: float | None = None) -> str:
    """The end-of-run report: best trial, its CV loss ± fold spread and metric, counts, where."""
    import numpy as np
    from optuna.trial import TrialState

    from sweeps.store.notes import embedding_evidence
    from sweeps.store.storage import describe

    trials = study.get_trials(deepcopy=False)
    counts = {state: sum(t.state == state for t in trials)
              for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)}
    took = f" in {seconds:.1f} s" if seconds is not None else ""
    lines = [f"Study '{study.study_name}': {counts[TrialState.COMPLETE]} complete, "
             f"{counts[TrialState.PRUNED]} pruned, {counts[TrialState.FAIL]} failed trials{took}."]
    if counts[TrialState.COMPLETE]:
        best = study.best_trial
        a = best.user_attrs
        name = a.get("metric_name", "metric")
        lines.append(
            f"Best trial #{best.number}: cv_loss {best.value:.4f} ± {a.get('cv_loss_std', float('nan')):.4f} "
            f"(std over {len(a.get('fold_val_losses', []))} folds), {name} "
            f"{a.get('metric', float('nan')):.4f} ± {a.get('metric_std', float('nan')):.4f}, "
            f"median best epoch {int(np.median(a.get('best_epochs', [0])))}")
        if a.get("honest_cv_loss") is not None:
            lines.append(f"  honest CV loss {a['honest_cv_loss']:.4f} (each fold's stopping epoch chosen on the "
                         f"other folds): early stopping made the CV loss {a['cv_optimism']:.4f} optimistic")
        lines.append("  " + "  ".join(f"{k}={_fmt(v)}" for k, v in best.params.items()))
        chosen = embedding_evidence([t for t in trials if t.state == TrialState.COMPLETE])
        if chosen:
            lines.append(f"Embeddings: {chosen}")
    else:
        lines.append("No trial completed yet.")
    if study.user_attrs.get("stop_reason"):
        lines.append(f"Stopped early, {study.user_attrs['stop_reason']}.")
    shown = describe(url)
    lines.append(f"Results: {shown}")
    lines.append(f"Browse:  optuna-dashboard {shown}")
    return "\n".join(lines)


def _fmt(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def parser() -> argparse.ArgumentParser:
    """The command's arguments (the docs' command lines are checked against it)."""
    p = _args.parser("python -m sweeps.run", "Run or resume a hyperparameter sweep.")
    p.add_argument("--n-trials", type=int, metavar="N", help="run N more trials than the study has")
    p.add_argument("--timeout", type=_args.positive_seconds, metavar="S", help="start no new trial after S seconds")
    p.add_argument("--seed", type=int, metavar="N", help="override the study file's seed")
    p.add_argument("--device", choices=_args.DEVICES, default="auto",
                   help="where to train (auto: CUDA when available)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="worker processes on this machine, sharing the study (default 1)")
    p.add_argument("--cluster", metavar="dask://HOST:PORT",
                   help="run the workers on an existing Dask cluster (pip install -e '.[dask]'); --workers N of "
                        "them (default: one per Dask worker thread); needs a --storage every machine reaches "
                        "(PostgreSQL) unless the scheduler is on this machine")
    p.add_argument("--heartbeat-interval", type=int, default=10, metavar="S",
                   help="seconds between a running trial's heartbeats (default 10)")
    p.add_argument("--grace-period", type=int, default=60, metavar="S",
                   help="a trial silent this long is failed and retried (default 60)")
    p.add_argument("--stop", choices=("converged",),
                   help="converged: also stop when further trials are unlikely to beat the best by more than the "
                        "folds' noise (as Study(stop=\"converged\")); --n-trials and --timeout stay caps")
    p.add_argument("--until-converged", action="store_true", help="the same as --stop converged (its older name)")
    p.add_argument("--batch", type=int, metavar="P",
                   help="train up to P trials at once, those of one shape in one stack, each slot refilled "
                        "as soon as its trial ends (default: measured; docs: searching)")
    p.add_argument("--reproducible", action="store_true",
                   help="with --workers: ask and tell in fixed rounds of N trials, so that the same study file "
                        "and seed give the same trials and values whatever the timing (slower: each round "
                        "waits for its slowest trial)")
    p.add_argument("--accept-changed-settings", action="store_true",
                   help="go on with a study whose max_epochs, patience or validation changed (recorded "
                        "in its settings_history); without it such a change is refused")
    p.add_argument("--follow", action="store_true",
                   help="then diagnose it, write the remedy as a new study file beside this one, run it, and go "
                        "on while rounds help; finally score the winner on the held-out rows once (docs: follow)")
    p.add_argument("--rounds", type=int, metavar="N",
                   help="with --follow: at most N rounds, the study itself included (default 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from sweeps.sweep.children import WaitingWorkers, most_workers

    if 1 < args.workers <= most_workers() and args.cluster is None:  # more is refused in one line, below
        # The workers import (seconds) while this process imports and loads the data.
        with WaitingWorkers(args.workers) as children:
            return _main(args, children)
    return _main(args, None)


def _main(args: argparse.Namespace, children) -> int:
    # The work's imports come after the arguments are read: --help and a wrong flag answer at once,
    # without loading torch and scikit-learn (seconds). A door is imported by nothing: no cycle hides here.
    from sweeps import _cli
    from sweeps.errors import SweepsError
    from sweeps.store.storage import resolve_url
    from sweeps.sweep.launcher import connect
    from sweeps.sweep.optimize import RunOptions, run_study

    def body() -> int:
        if args.rounds is not None and not args.follow:
            raise SweepsError("--rounds N counts the rounds of --follow; add --follow, or drop --rounds.")
        if args.until_converged:
            print("sweeps: note: --until-converged is now --stop converged; the old name keeps working.",
                  file=sys.stderr)
        options = RunOptions(
            n_trials=args.n_trials, timeout=args.timeout, device=str(_cli.resolve_device(args.device)),
            workers=args.workers, cluster=args.cluster,
            batch=args.batch, reproducible=args.reproducible, heartbeat=(args.heartbeat_interval, args.grace_period),
            stop="converged" if args.until_converged else args.stop,
            accept_changed_settings=args.accept_changed_settings, progress=not args.no_progress)
        _cli.quiet_optuna()
        _cli.set_threads(args.workers)
        spec = _cli.load_spec(args.study_file, seed=args.seed)
        url = resolve_url(spec.name, args.storage)
        client = None
        if args.cluster is not None:  # the scheduler is asked before the data's load
            options.check_storage(url)
            client = connect(args.cluster)
        try:
            dataset = _cli.load_data(args.study_file, spec)
        except BaseException:
            if client is not None:
                client.close(timeout=10)
            raise
        if args.follow:
            from sweeps.follow.loop import DEFAULT_ROUNDS, follow_study

            follow_study(spec, dataset, options, study_file=args.study_file, storage=args.storage,
                         rounds=args.rounds if args.rounds is not None else DEFAULT_ROUNDS,
                         overrides={"seed": args.seed} if args.seed is not None else {}, children=children)
            return 0
        started = time.perf_counter()
        study = run_study(spec, dataset, options, storage=args.storage,
                          study_file=args.study_file, overrides={"seed": args.seed} if args.seed is not None else {},
                          client=client, children=children)
        print(summary(study, url, time.perf_counter() - started))
        return 0

    return _cli.guarded(body)


if __name__ == "__main__":
    _args.leave(main())

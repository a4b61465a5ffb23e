"""`python -m sweeps.run STUDY_FILE --follow`: diagnose, apply the remedy, sweep again, stop
when nothing more helps; then score the winner on the held-out rows, once.

Each round after the first is a study file written beside the first (`studyfile`), run as a
new Optuna study in the first study's storage. A round is kept only when its best trial's
honest CV loss is lower than its parent's by more than one standard error of the difference,
fold by fold (the rounds share their folds: same data, seed and k, so the pairs cancel the
folds' difficulty). The loop stops when the diagnosis finds nothing to act on, when two
rounds in a row were not kept, when a remedy has nothing left to move, or at the round cap.

No round looks at the held-out rows: the diagnoses run on the development folds
(`held_out=False`); the winner is evaluated once at the end, and only then is mismatch judged.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np
import optuna
from optuna.trial import TrialState

from sweeps.data.dataset import Dataset
from sweeps.engine.scores import honest_folds
from sweeps.errors import STDERR, STDOUT, SweepsError
from sweeps.follow import report, studyfile
from sweeps.follow.remedies import Remedy, Stop, diverged, next_remedy
from sweeps.results.diagnose import Thresholds, Verdict, diagnose_study, mismatch_verdict
from sweeps.results.evaluate import evaluate_study
from sweeps.results.evaluate import report as test_report
from sweeps.spec.study import Study, load_study_file
from sweeps.store import notes, record
from sweeps.store.storage import describe, load_existing_study, resolve_url, write_text_atomic
from sweeps.sweep.optimize import RunOptions, run_study

DEFAULT_ROUNDS = 4  # the first study and up to three remedies
NOTHING_TWICE = 2  # rounds in a row that were not kept before the loop gives up


@dataclass
class Round:
    """One round of --follow: a study, where it came from, and how it compares."""

    number: int
    name: str
    file: Path
    parent: str | None  # the study it was derived from
    problem: str | None  # the verdict acted on
    change: str | None
    honest: float  # the best trial's honest CV loss
    se: float  # its standard error over folds
    diff: float | None = None  # honest CV loss minus the parent's, fold by fold
    diff_se: float | None = None
    kept: bool = True
    seconds: float = 0.0
    best_trial: int = 0  # -1: no trial finished
    folds: list[float] | None = None  # the best trial's per-fold honest losses, which children are compared with
    why: str = ""  # the words of the verdict on its parent that led to it
    diagnosed: str = ""  # its own diagnosis, verdict by verdict, when it was diagnosed


@dataclass
class FollowResult:
    """What `--follow` did: every `Round` (its study, the problem acted on, the change, its
    honest CV loss ± standard error and the difference from its parent), the `winner`, why
    it stopped, the winner's held-out `test_result`, the `mismatch` verdict judged on it, and
    the Markdown `report` (also written to `path`)."""

    rounds: list[Round]
    winner: Round
    stop_reason: str
    test_result: dict | None
    mismatch: object  # the Verdict judged on the held-out rows
    report: str
    path: Path  # where the report was written


def follow_study(spec: Study, dataset: Dataset, options: RunOptions | None = None, *, study_file: str,
                 storage: str | None = None, rounds: int = DEFAULT_ROUNDS, thresholds: Thresholds = Thresholds(),
                 overrides: dict | None = None, out: TextIO = STDOUT, err: TextIO = STDERR,
                 children=None) -> FollowResult:
    """Run `spec` and its rounds (see the module); evaluate the winner once; write the report."""
    if rounds < 1:
        raise SweepsError(f"--rounds {rounds}: give at least 1 (the study itself).")
    options = options or RunOptions()
    if options.workers > 1 or options.cluster is not None:
        raise SweepsError("--follow runs its rounds in this process, one after the other; drop --workers and "
                          "--cluster (or run each round's study file with them yourself).")
    first = Path(study_file)
    _check_rounds_writable(first)
    url = resolve_url(spec.name, storage)  # every round in the first study's storage
    device = options.device

    started = time.perf_counter()
    study = run_study(spec, dataset, options, storage=url, study_file=study_file, overrides=overrides, out=out,
                      children=children)
    history = [_measure(study, 1, spec.name, first, None, None, time.perf_counter() - started)]
    specs = {spec.name: spec}
    incumbent, misses, tried = history[0], 0, {}
    stop_reason = ""
    while True:
        if len(history) >= rounds:
            stop_reason = f"the round cap: {rounds} rounds (--rounds)"
            break
        parent_spec = specs[incumbent.name]
        stored = load_existing_study(incumbent.name, url)[0]
        trials = _complete(stored)
        tried.setdefault(incumbent.name, {})
        if not trials:  # nothing to diagnose: every trial diverged, was pruned or failed
            diagnosis = None
            remedy = diverged(parent_spec, stored.get_trials(deepcopy=False), tried[incumbent.name])
            incumbent.diagnosed = "no trial finished, so no diagnosis"
        else:
            print(f"\n--follow: diagnosing '{incumbent.name}' on its development rows...", file=out, flush=True)
            diagnosis = diagnose_study(parent_spec, dataset, storage=url, thresholds=thresholds, device=device,
                                       held_out=False, progress=lambda line: print(f"diagnose: {line}", file=err,
                                                                                   flush=True))
            remedy = next_remedy(parent_spec, diagnosis, trials, tried[incumbent.name])
            incumbent.diagnosed = diagnosis_line(diagnosis)
        if isinstance(remedy, Stop):
            stop_reason = remedy.reason
            break
        tried[incumbent.name][remedy.problem] = tried[incumbent.name].get(remedy.problem, 0) + 1
        number = len(history) + 1
        spec_next, file = _write_round(first, number, spec.name, incumbent, remedy, diagnosis, url)
        print(f"--follow round {number} of at most {rounds}: {remedy.problem}: {remedy.why}\n"
              f"  change: {remedy.change}\n  study file: {file}", file=out, flush=True)
        started = time.perf_counter()
        study = run_study(spec_next, dataset, options, storage=url, study_file=str(file), out=out)
        current = _measure(study, number, spec_next.name, file, incumbent, remedy, time.perf_counter() - started)
        history.append(current)
        specs[spec_next.name] = spec_next
        _record(study, current, remedy)
        print(f"--follow round {number}: honest CV loss {current.honest:.4f} ± {current.se:.4f}; "
              f"{current.diff:+.4f} ± {current.diff_se:.4f} against '{incumbent.name}' fold by fold: "
              + ("kept" if current.kept else "not kept (not better by more than one standard error)"),
              file=out, flush=True)
        if current.kept:
            incumbent, misses = current, 0
        else:
            misses += 1
            if misses >= NOTHING_TWICE:
                stop_reason = f"{NOTHING_TWICE} rounds in a row brought nothing (not better by more than one " \
                              "standard error)"
                break

    winner = incumbent
    print(f"\n--follow stopped: {stop_reason}.\nWinner: '{winner.name}' ({winner.file}), honest CV loss "
          f"{winner.honest:.4f} ± {winner.se:.4f}.", file=out, flush=True)
    # The one use of the held-out rows: the winner's final model, scored once (a rerun reuses it).
    winner_spec = specs[winner.name]
    winner_study, _ = load_existing_study(winner.name, url)
    result = winner_study.user_attrs.get("test_result")
    if winner.best_trial < 0:  # not one trial finished, in any round: nothing to score
        mismatch = Verdict("mismatch", "not checked", "no trial finished in any round, so nothing was scored on "
                           "the held-out rows.", [])
    else:
        if result is None:
            result, _ = evaluate_study(winner_spec, dataset, storage=url, device=device, err=err)
            print(test_report(winner_spec, result), file=out, flush=True)
        else:
            print(f"'{winner.name}' was already scored on the held-out rows (evaluation #{result['evaluation']}); "
                  "not scored again.", file=out, flush=True)
        mismatch = mismatch_verdict(winner_study, dataset, winner_spec, thresholds)
    root, _ = load_existing_study(spec.name, url)
    text, path = report.write(root, winner_study, url, history, winner, stop_reason, result, mismatch)
    print(f"\nThe path of --follow: {path} (attached to '{spec.name}' in optuna-dashboard {describe(url)}).",
          file=out, flush=True)
    return FollowResult(history, winner, stop_reason, result, mismatch, text, path)


def _check_rounds_writable(first: Path) -> None:
    probe = studyfile.round_path(first, 0).with_suffix(".partial")
    try:
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise SweepsError(f"{first.parent}: --follow writes each round as a study file beside {first.name}, and "
                          f"cannot write there ({e.strerror}); copy the study file (and its data) to a folder you "
                          "can write, or drop --follow.") from None


def diagnosis_line(diagnosis) -> str:
    return "; ".join(f"{v.problem}: {v.status}" for v in diagnosis.verdicts if v.status != "not checked")


def _complete(study: optuna.Study) -> list:
    return [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if t.value is not None]


def _write_round(first: Path, number: int, root: str, parent: Round, remedy: Remedy, diagnosis,
                 url: str) -> tuple[Study, Path]:
    file = studyfile.round_path(first, number)
    name = studyfile.round_name(root, number)
    evidence = (f"'{parent.name}' (round {parent.number}): honest CV loss {parent.honest:.4f} ± {parent.se:.4f} "
                f"(best trial #{parent.best_trial}); verdicts: {diagnosis_line(diagnosis)}." if diagnosis is not None
                else f"'{parent.name}' (round {parent.number}): no trial finished.")
    text = studyfile.render(parent_file=parent.file, file=file, name=name, number=number, parent_name=parent.name,
                            remedy=remedy, evidence=evidence + "".join(f" {n}." for n in remedy.notes),
                            storage=url)
    write_text_atomic(file, text)
    return load_study_file(file), file  # exactly what a user running the file gets


def _measure(study: optuna.Study, number: int, name: str, file: Path, parent: Round | None,
             remedy: Remedy | None, seconds: float) -> Round:
    """The round's honest CV loss, and against its parent, fold by fold."""
    trials = _complete(study)
    best = min(trials, key=lambda t: t.value) if trials else None
    folds = _honest(best) if best is not None else None
    k = len(folds or [])
    current = Round(number, name, file, parent.name if parent else None, remedy.problem if remedy else None,
                    remedy.change if remedy else None, float(np.mean(folds)) if folds else math.inf,
                    float(np.std(folds, ddof=1) / math.sqrt(k)) if k > 1 else 0.0, seconds=seconds,
                    best_trial=best.number if best is not None else -1, folds=folds,
                    why=remedy.why if remedy else "")
    if parent is not None:
        if folds is None:  # no trial of the round finished: nothing to keep
            current.diff, current.diff_se, current.kept = math.inf, 0.0, False
        elif parent.folds is None:  # none of the parent's did: any finished trial is better
            current.diff, current.diff_se, current.kept = -math.inf, 0.0, True
        else:
            current.diff, current.diff_se, current.kept = compare(folds, parent.folds)
    return current


def compare(ours: list[float], theirs: list[float]) -> tuple[float, float, bool]:
    """(mean difference, its standard error, whether `ours` is better by more than that).

    Fold by fold when both have the same folds (the rounds of one --follow do: same data, seed
    and k): the pairs cancel how hard each fold is, which differs far more than good
    configurations do. Otherwise the means, their standard errors combined."""
    k = len(ours)
    if len(theirs) == k and k > 1:
        differences = np.asarray(ours) - np.asarray(theirs)
        diff, se = float(differences.mean()), float(differences.std(ddof=1) / math.sqrt(k))
    else:
        error = lambda v: float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0  # noqa: E731
        diff, se = float(np.mean(ours) - np.mean(theirs)), math.hypot(error(ours), error(theirs))
    return diff, se, diff < -se


def _honest(trial) -> list[float]:
    """The trial's per-fold honest losses (the epoch chosen on the other folds), or its per-fold
    losses when the curves cannot say."""
    curves = trial.user_attrs.get("fold_curves")
    if curves and all(curves) and all(v is not None for c in curves for v in c):
        folds = honest_folds(curves)
        if folds is not None and all(map(math.isfinite, folds)):
            return folds
    return [v for v in trial.user_attrs.get("fold_val_losses") or [trial.value] if v is not None]


def _record(study: optuna.Study, current: Round, remedy: Remedy) -> None:
    """Where the round came from and what it changed, on the round's study (its dashboard note)."""
    record.write_follow(study, {"round": current.number, "parent": current.parent, "problem": remedy.problem,
                                   "why": remedy.why, "change": remedy.change, "file": str(current.file),
                                   "honest_cv_loss": current.honest, "difference": current.diff,
                                   "difference_se": current.diff_se, "kept": current.kept})
    notes.refresh(study)

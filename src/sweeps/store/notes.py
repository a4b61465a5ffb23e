"""The study's note in optuna-dashboard, rebuilt from what sweeps stored on the study.

optuna-dashboard shows one Markdown note per study. sweeps writes it whole each time
something changes (a run, an evaluation, a diagnosis), from the study's user attrs, so the
note always shows the current settings, the held-out test result and the diagnosis.
"""

from __future__ import annotations

import statistics

import optuna
from optuna_dashboard import save_note

from sweeps.store import internals, record


def study_note(study: optuna.Study) -> str:
    a = study.user_attrs
    settings = a.get("settings") or {}
    fingerprint = a.get("fingerprint") or {}
    lines = [f"# sweeps study '{study.study_name}'", "",
             "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in settings.items()]
    # the hashes and counts, not the column names
    lines += [f"| {k} | `{v}` |" for k, v in fingerprint.items() if v is not None and not isinstance(v, list)]
    if a.get("sweeps_version"):
        lines.append(f"| sweeps version | {a['sweeps_version']} |")
    if a.get("stop_reason"):
        lines += ["", f"Stopped early, {a['stop_reason']}."]
    follow = a.get("follow")
    if follow:  # a round of --follow: where it came from, what it changed, whether it was kept
        lines += ["", f"Round {follow['round']} of --follow, derived from study '{follow['parent']}' "
                  f"(`{follow['file']}`): {follow['problem']}: {follow['why']}", "",
                  f"Changed: {follow['change']}. Honest CV loss {follow['honest_cv_loss']:.4f}, "
                  f"{follow['difference']:+.4f} ± {follow['difference_se']:.4f} against its parent fold by fold: "
                  + ("kept." if follow["kept"] else "not kept (not better by more than one standard error).")]
    if a.get("follow_report"):
        lines += ["", a["follow_report"].replace("# --follow", "## --follow", 1)]
    chosen = embedding_evidence(study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
    if chosen:
        lines += ["", f"Embeddings: {chosen}"]
    result = a.get("test_result")
    if result:
        lines += ["", f"## Held-out test result (evaluation #{result['evaluation']}, {result['timestamp']})", "",
                  f"{final_model_line(result)} Scored once on {result['test_rows']} held-out rows.", "",
                  "| | test | CV |", "|---|---|---|",
                  f"| loss | {result['loss']:.4f} | {_pm(result.get('cv_loss'), result.get('cv_loss_std'))} |",
                  f"| {result['metric_name']} | {result['metric']:.4f} | "
                  f"{_pm(result.get('cv_metric'), result.get('cv_metric_std'))} |"]
        if a.get("test_evaluations", 0) > 1:
            lines += ["", f"The test set has been used {a['test_evaluations']} times."]
    if a.get("diagnosis_report"):
        lines += ["", a["diagnosis_report"].replace("# Diagnosis", "## Diagnosis", 1)]
    return "\n".join(lines) + "\n"


def embedding_evidence(trials: list) -> str | None:
    """Which numeric embedding the search chose, and on what evidence: the best CV loss and the
    typical time of the complete trials with and without, when both were tried (the default
    `embedding="auto"` searches both for tables with few numeric columns; docs: models)."""
    by_choice: dict[str, list] = {}
    for t in trials:
        if t.value is not None and "embedding" in t.params:
            by_choice.setdefault(t.params["embedding"], []).append(t)
    if len(by_choice) < 2:
        return None
    best = {choice: min(ts, key=lambda t: t.value) for choice, ts in by_choice.items()}
    winner = min(best, key=lambda c: best[c].value)
    parts = []
    for choice in sorted(by_choice, key=lambda c: best[c].value):
        seconds = statistics.median(t.user_attrs.get("seconds", 0.0) for t in by_choice[choice])
        parts.append(f"{choice} {best[choice].value:.4f} (trial #{best[choice].number}; {len(by_choice[choice])} "
                     f"complete trials, median {seconds:.1f} s each)")
    return f"the search chose {winner}: best CV loss " + " against ".join(parts) + "."


def final_model_line(e: dict) -> str:
    """What was scored: the declared final model, in words (and why, when "auto" chose it)."""
    line = _final_model_words(e)
    return f"{line} ({e['final_model_reason']}.)" if e.get("final_model_reason") else line


def _final_model_words(e: dict) -> str:
    final = e.get("final_model", "refit")
    if final == "folds":
        return (f"Final model: the {e['members']} fold-models of {e['source']}, averaged (each trained on its "
                "fold's training part, as in the sweep).")
    if final == "ensemble":
        ensemble = e.get("ensemble") or {}
        return (f"Final model: {e['source']}, weighted, {e['members']} fold-models in all (selected on their "
                f"out-of-fold predictions: CV loss {ensemble.get('oof_loss', float('nan')):.4f}, honest "
                f"{ensemble.get('honest_loss', float('nan')):.4f}; the best single trial "
                f"{ensemble.get('best_single_loss', float('nan')):.4f}).")
    if final == "refit-seeds":
        return (f"Final model: {e['members']} nets of {e['source']} with different seeds, averaged, each "
                f"retrained on all {e['train_rows']} non-test rows for {e['epochs']} epochs.")
    return f"Final model: {e['source']} retrained on all {e['train_rows']} non-test rows for {e['epochs']} epochs."


def _pm(mean, std) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f}"


def summary(study: optuna.Study) -> str:
    """The held-out result and the diagnosis in two sentences (the page the study opens on shows
    it; the note has the whole story)."""
    a = study.user_attrs
    result = a.get("test_result")
    if result:
        final = result.get("final_model", "refit")
        told = (f"Held-out test (evaluation #{result['evaluation']}, {result['test_rows']} rows, final model "
                f"{final}): {result['metric_name']} {result['metric']:.4f}, loss {result['loss']:.4f}; CV "
                f"{result['metric_name']} {_pm(result.get('cv_metric'), result.get('cv_metric_std'))}.")
    else:
        told = "Not scored on the held-out rows yet (python -m sweeps.evaluate)."
    diagnosis = a.get("diagnosis")
    if diagnosis:
        problems = diagnosis.get("problems") or []
        told += (f" Diagnosis: {', '.join(problems)}; remedies in the Note." if problems
                 else " Diagnosis: nothing limits the model among the problems checked.")
    else:
        told += " Not diagnosed yet (python -m sweeps.diagnose)."
    return told + " The whole report: the Note page."


def refresh(study: optuna.Study) -> None:
    """Write the study note for optuna-dashboard, and the summary shown where the study opens."""
    save_note(study, study_note(study))
    record.write_summary(study, summary(study))


def trial_note(result, task: str, reason: str | None = None, attrs: dict | None = None) -> str:
    """A trial's note: why it ended (if pruned or failed), its per-fold results and, with
    Study(groups=), its validation loss and metric per group (from its recorded `attrs`), worst first."""
    lines = []
    if reason:
        lines += [f"**{reason}**", ""]
    if result is not None and result.val_losses:
        metric = "accuracy" if task == "classification" else "RMSE"
        lines += [f"| fold | validation loss | training loss | {metric} | best epoch | stopped |",
                  "|---|---|---|---|---|---|"]
        for f, (v, t, m, e, s) in enumerate(zip(result.val_losses, result.train_losses, result.metrics,
                                                result.best_epochs, result.stop_reasons)):
            lines.append(f"| {f} | {v:.4f} | {t:.4f} | {m:.4f} | {e} | {s} |")
        if attrs and "group_val_loss" in attrs:
            lines += ["", *group_lines(attrs, task)]
    return "\n".join(lines) + "\n"


def group_lines(attrs: dict, task: str) -> list[str]:
    """A trial's groups (its `group_val_loss`, `group_metric`, `group_spread` attrs), worst first."""
    metric = "accuracy" if task == "classification" else "RMSE"
    losses, metrics = attrs["group_val_loss"], attrs["group_metric"]
    lines = [f"Per group (worst first; spread {attrs['group_spread']:.4f}):", "",
             f"| group | validation loss | {metric} |", "|---|---|---|"]
    for name in sorted(losses, key=lambda n: -losses[n]):
        lines.append(f"| {name} | {losses[name]:.4f} | {metrics[name]:.4f} |")
    return lines


# optuna-dashboard finds each trial's note (and its artifacts) by scanning every note of the
# study: a study page costs trials x notes string checks. With 1,000 notes, a 5,000-trial
# study's trials API call took 26 s, 20 s of it in those scans; with 200, 5 s
# (benchmarks/bench_dashboard.py). Past this many trials the reasons stay in the user attrs
# (prune_reason, fail_reason) and the per-fold numbers in fold_val_losses and the rest.
MAX_TRIAL_NOTES = 200


def save_trial_note(trial: optuna.Trial, body: str) -> None:
    """The trial's note, written once, in optuna-dashboard's format (for the first MAX_TRIAL_NOTES trials).

    `optuna_dashboard.save_note` reads every note of the study twice to version and clean up
    the one it writes: in a 5,000-trial study, megabytes per trial. A trial's note is written
    once, at its end, so version 1 and its chunks are written directly (the same keys).
    """
    if trial.number >= MAX_TRIAL_NOTES:
        return
    if not internals.write_trial_note_keys(trial, body):  # another optuna-dashboard: its own, slower way
        save_note(trial, body)

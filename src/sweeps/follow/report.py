"""The path of --follow, as a Markdown report and a plot: each round's verdict, change, honest
CV loss ± standard error and time; why it stopped; the winner's one held-out score; and the
mismatch remedies, with what only the user can supply. Stored on the first study (its note,
an artifact and a plot in optuna-dashboard) and as `storage/<name>-follow.md`."""

from __future__ import annotations

from pathlib import Path

import optuna

from sweeps.results.diagnose import Verdict
from sweeps.store import notes, record
from sweeps.store.storage import attach, output_path, write_text_atomic

# What each mismatch remedy needs that sweeps cannot make up: --follow proposes them, never runs them.
SUPPLY = [
    ("Study(target_data=...)", "unlabeled rows drawn like the test rows (features only, no labels)",
     'then Space(importance="density_ratio") weighs the training rows that look like them, or '
     "Space(adversarial=(0.01, 1.0)) trains features a domain classifier cannot tell apart"),
    ("Study(groups=...)", "the source of every row (a column of the table, or an array)",
     'then early_stopping="worst_group" stops and chooses on the worst source'),
    ("Study(init_from=...)", "a model trained on data like the test data (saved by evaluate)",
     "fine-tuned on these rows: transfer learning"),
]


def markdown(rounds, winner, stop_reason: str, result: dict | None, mismatch: Verdict) -> str:
    first = rounds[0]
    lines = [f"# --follow of study '{first.name}'", "",
             "Each round is a study file beside the first, run as a new study in the same storage. A round is "
             "kept when its best trial's honest CV loss is lower than its parent's by more than one standard "
             "error of the difference, fold by fold. No round looked at the held-out rows.", "",
             "| round | study | acted on | change | honest CV loss ± SE | against its parent | kept | time |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rounds:
        against = "" if r.diff is None else f"{r.diff:+.4f} ± {r.diff_se:.4f} (vs '{r.parent}')"
        kept = ("**winner**" if r is winner else "yes") if r.kept else "no"
        honest = f"{r.honest:.4f} ± {r.se:.4f}" if r.best_trial >= 0 else "no trial finished"
        lines.append(f"| {r.number} | {r.name} (`{r.file.name}`) | {r.problem or '(the study file)'} | "
                     f"{r.change or ''} | {honest} | {against} | {kept} | {r.seconds:.0f} s |")
    lines += ["", f"Stopped: {stop_reason}.", "",
              f"Winner: '{winner.name}' (`{winner.file}`), honest CV loss {winner.honest:.4f} ± {winner.se:.4f}"
              + (f", {first.honest - winner.honest:.4f} below the first study's." if winner is not first else
                 ": the first study; no remedy helped by more than the folds' noise.")]
    lines += ["", "## Each round's diagnosis and remedy", ""]
    for r in rounds:
        made = f"made from '{r.parent}' for {r.problem}: {r.why}" if r.parent else "the study file as written."
        lines.append(f"- round {r.number} ('{r.name}'): {made}"
                     + (f" Its diagnosis: {r.diagnosed}." if r.diagnosed else " Not diagnosed."))
    lines += ["", "## The held-out test, once, on the winner", ""]
    if result:
        lines += [f"{notes.final_model_line(result)} {result['metric_name']} {result['metric']:.4f}, loss "
                  f"{result['loss']:.4f} on {result['test_rows']} held-out rows (evaluation #{result['evaluation']})."]
    lines += ["", f"## Mismatch: {mismatch.status}", "", mismatch.summary[0].upper() + mismatch.summary[1:]]
    lines += [f"- {e}" for e in mismatch.evidence if not result or e != notes.final_model_line(result)]
    if mismatch.status == "yes":
        lines += ["", "--follow ran none of these remedies: each needs something only you have, and choosing between "
                  "them on the held-out rows would spend those rows a second time. What to supply:", ""]
        lines += [f"- **{field}**: {what}; {then}." for field, what, then in SUPPLY]
        lines += ["", "Also: " + "; ".join(r for r in mismatch.remedies
                                          if not any(s in r for s in ("target_data", "groups", "init_from"))) + "."]
    return "\n".join(lines) + "\n"


def write(root: optuna.Study, winner_study: optuna.Study, url: str, rounds, winner, stop_reason: str,
          result: dict | None, mismatch: Verdict) -> tuple[str, Path]:
    """Write the report beside the database, attach it and its plot to the first study."""
    text = markdown(rounds, winner, stop_reason, result, mismatch)
    path = write_text_atomic(output_path(url, root.study_name, "-follow.md"), text)
    attach(root, path, url)
    record.write_follow_report(root, text)
    _plot(root, rounds, winner)
    notes.refresh(root)
    if winner_study.study_name != root.study_name:
        notes.refresh(winner_study)
    return text, path


def _plot(study: optuna.Study, rounds, winner) -> None:
    import plotly.graph_objects as go
    from optuna_dashboard import save_plotly_graph_object

    figure = go.Figure()
    for kept in (True, False):
        chosen = [r for r in rounds if r.kept == kept]
        if chosen:
            figure.add_scatter(x=[r.number for r in chosen], y=[r.honest for r in chosen], mode="markers",
                               name="kept" if kept else "not kept",
                               text=[r.problem or "the study file" for r in chosen],
                               error_y={"type": "data", "array": [r.se for r in chosen]})
    figure.add_scatter(x=[winner.number], y=[winner.honest], mode="markers", name="winner",
                       marker={"symbol": "star", "size": 14})
    figure.update_layout(title="--follow: each round's honest CV loss ± standard error", xaxis_title="round",
                         yaxis_title="honest CV loss", xaxis={"dtick": 1})
    save_plotly_graph_object(study, figure, graph_object_id="sweeps-follow")

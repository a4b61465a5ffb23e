"""Embeddings chosen by evidence: `embedding="auto"` as it is now against the rule it replaced.

    python benchmarks/bench_embedding.py [--studies adult,breast_cancer,...] [--seeds 0]
                                         [--json results.json]

Until this benchmark, `"auto"` turned the periodic embeddings on for every table with at most
32 numeric columns (`"periodic"` below). Now it searches `"none"` against `"periodic"` on those
tables, and the folds' validation loss decides (`"searched"`). For every shipped study file
(`studies/*.py`) and seed, the study as written (its data, held-out rows, space, trial budget
and final model; `seed=` replaced) is swept twice in fresh SQLite files, once per rule, in
alternating order, then `evaluate` scores its final model on the held-out rows. Printed per
study: the sweep's wall time under each rule and their ratio, the best CV loss, the held-out
metric, and which embedding the searched sweep's best trial uses; medians over seeds.

Skipped, and said why: studies where the rules agree by construction (more than 32 numeric
columns, e.g. digits: "none" either way) and studies whose net comes from a saved model
(`init_from`: its embeddings are the model's).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import optuna

from sweeps import Space
from sweeps._cli import quiet_optuna
from sweeps.data.dataset import load_dataset
from sweeps.results.evaluate import evaluate_study
from sweeps.spec.options import AUTO_EMBEDDING_MAX_NUMERIC
from sweeps.spec.study import load_study_file
from sweeps.sweep.optimize import run_study

STUDIES = Path(__file__).resolve().parent.parent / "studies"
RULES = {"periodic": "periodic", "searched": "auto"}  # the old "auto", and "auto" now


def skip_reason(spec, dataset) -> str | None:
    if spec.init_from is not None:
        return "its net (embeddings included) comes from init_from"
    if not isinstance(spec.space, Space) or "auto" not in getattr(spec.space.embedding, "choices", ()):
        return "its space names the embedding"
    n_numeric = sum(k == "numeric" for k in dataset.kinds) if dataset.kinds else dataset.X.shape[1]
    if not 1 <= n_numeric <= AUTO_EMBEDDING_MAX_NUMERIC:
        return f"{n_numeric} numeric columns: \"none\" under both rules"
    return None


def one(spec, dataset, rule: str, folder: Path) -> dict:
    spec = dataclasses.replace(spec, space=dataclasses.replace(spec.space, embedding=RULES[rule]))
    (folder / rule).mkdir()  # each rule's database, candidates and model in a folder of its own
    url = f"sqlite:///{folder / rule / 'sweep.db'}"
    started = time.perf_counter()
    study = run_study(spec, dataset, storage=url, progress=False, out=io.StringIO())
    seconds = time.perf_counter() - started
    entry, _ = evaluate_study(spec, dataset, storage=url, model_path=str(folder / rule / "model.pt"),
                              err=io.StringIO())
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    return {"rule": rule, "sweep_seconds": seconds, "cv_loss": study.best_value,
            "embedding": study.best_trial.params.get("embedding", "none"),
            "periodic_trials": sum(t.params.get("embedding") == "periodic" for t in done),
            "complete": len(done), "metric_name": entry["metric_name"], "metric": entry["metric"],
            "test_loss": entry["loss"], "final_model": entry["final_model"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--studies", default=",".join(sorted(p.stem for p in STUDIES.glob("*.py"))))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--trials", type=int, help="override every study's n_trials (a quick check of this script)")
    ap.add_argument("--json", help="append one JSON line per run to this file")
    args = ap.parse_args(argv)
    quiet_optuna()
    rows: dict[str, list[tuple[dict, dict]]] = {}
    for name in args.studies.split(","):
        base = load_study_file(STUDIES / f"{name}.py")
        dataset = load_dataset(base)
        why = skip_reason(base, dataset)
        if why:
            print(f"{name}: skipped, {why}", flush=True)
            continue
        for i, seed in enumerate(int(s) for s in args.seeds.split(",")):
            spec = dataclasses.replace(base, seed=seed, n_trials=args.trials or base.n_trials)
            dataset = load_dataset(spec)
            order = ["periodic", "searched"] if (i + len(rows)) % 2 == 0 else ["searched", "periodic"]
            with tempfile.TemporaryDirectory() as tmp:
                runs = {rule: one(spec, dataset, rule, Path(tmp)) for rule in order}
            for r in runs.values():
                print(json.dumps({"study": name, "seed": seed, **r}), flush=True)
                if args.json:
                    with open(args.json, "a") as f:
                        f.write(json.dumps({"study": name, "seed": seed, **r}) + "\n")
            rows.setdefault(name, []).append((runs["periodic"], runs["searched"]))
    print("\n| study | metric | periodic | searched | CV loss periodic / searched | sweep s periodic / searched "
          "| time ratio | searched chose |")
    print("|---|---|---|---|---|---|---|---|")
    for name, pairs in rows.items():
        med = lambda rule, key: statistics.median(p[0 if rule == "periodic" else 1][key] for p in pairs)  # noqa: E731
        chose = ", ".join(p[1]["embedding"] + f" ({p[1]['periodic_trials']}/{p[1]['complete']} periodic)"
                          for p in pairs)
        ratio = statistics.median(p[1]["sweep_seconds"] / p[0]["sweep_seconds"] for p in pairs)
        print(f"| {name} | {pairs[0][0]['metric_name']} | {med('periodic', 'metric'):.4f} | "
              f"{med('searched', 'metric'):.4f} | {med('periodic', 'cv_loss'):.4f} / {med('searched', 'cv_loss'):.4f} "
              f"| {med('periodic', 'sweep_seconds'):.0f} / {med('searched', 'sweep_seconds'):.0f} | {ratio:.2f} | "
              f"{chose} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

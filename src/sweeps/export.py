"""`python -m sweeps.export STUDY_FILE`: write the chosen configuration to a file, or the saved
model as ONNX.

    python -m sweeps.export studies/digits.py [--format json|yaml] [--output PATH] [--storage URL]
                                              [--top K] [--rule best|one-se] [--model onnx]
                                              [--held-out-rows]

The command: arguments in, `sweeps.results.export` called, what it wrote printed.
"""

from __future__ import annotations

import argparse

from pathlib import Path

from sweeps import _args
from sweeps.spec.options import EXPORT_RULES


def parser() -> argparse.ArgumentParser:
    """The command's arguments (the docs' command lines are checked against it)."""
    p = _args.parser("python -m sweeps.export", "Export the best configuration of a study.")
    p.add_argument("--format", choices=("json", "yaml"), default=None,
                   help="file format (default: from --output's suffix, else json)")
    p.add_argument("--output", metavar="PATH", help="where to write (default: storage/<name>-best.<format>)")
    p.add_argument("--top", type=int, default=1, metavar="K", help="list the K best trials")
    p.add_argument("--model", choices=("onnx",), help="export the trained model (saved by evaluate) instead of the "
                   "configuration: --model onnx writes an ONNX graph, checked with onnxruntime")
    p.add_argument("--model-file", metavar="PATH", help="the model to export (default: storage/<name>-model.pt)")
    p.add_argument("--held-out-rows", action="store_true",
                   help="write the held-out rows' positions (one per line, CSV) instead, to score another tool on "
                        "the same rows (default: storage/<name>-held-out-rows.csv); needs no sweep")
    p.add_argument("--rule", choices=EXPORT_RULES, default="best",
                   help="which trial to export: the lowest CV loss (best, default) or the simplest within one "
                        "standard error of it (one-se)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The work's imports come after the arguments are read: --help and a wrong flag answer at once,
    # without loading torch and scikit-learn (seconds). A door is imported by nothing: no cycle hides here.
    from sweeps import _cli
    from sweeps.results.export import export_onnx_model, export_study, write_held_out_rows
    from sweeps.results.onnx import TOLERANCE
    from sweeps.store.storage import load_existing_study, output_path, resolve_url

    def body() -> int:
        _cli.quiet_optuna()
        if args.held_out_rows:
            spec, dataset = _cli.load(args.study_file)
            path = Path(args.output) if args.output else output_path(resolve_url(spec.name, args.storage), spec.name,
                                                                     "-held-out-rows.csv")
            rows, kind = write_held_out_rows(dataset, spec.test_data is not None, path)
            where = "the rows of test_data" if kind == "test_data_row" else "the rows the study's data returns"
            print(f"Wrote the {len(rows)} held-out rows of '{spec.name}' to {path}: positions (from 0) in {where}.")
            return 0
        if args.model:
            spec, dataset = _cli.load(args.study_file)
            study, url = load_existing_study(spec.name, args.storage)
            source, path, model = export_onnx_model(dataset, study, url, args.model_file, args.output)
            prep = model.preprocessing
            kinds = (("numeric", prep.n_numeric), ("text", prep.categorical_columns))
            takes = " and ".join(kind for kind, there in kinds if there) + " columns"
            print(f"Exported {source} ({model.n_members} member(s)) to {path}: {takes} in, "
                  f"{'class probabilities' if model.task == 'classification' else 'predictions'} out; "
                  f"onnxruntime agrees with load_model to {TOLERANCE:g}.")
            return 0
        spec = _cli.load_spec(args.study_file)
        study, url = load_existing_study(spec.name, args.storage)
        document, path = export_study(study, url, top=args.top, rule=args.rule, output=args.output,
                                      fmt=args.format)
        best = document["trials"][0]
        print(f"Exported {len(document['trials'])} trial(s) of '{spec.name}' to {path}")
        print(f"Chosen by the {document['chosen_because']}.")
        honest = best.get("honest_cv_loss")
        print(f"Trial #{best['trial']}: cv_loss {best['cv_loss']:.4f} ± {best['cv_loss_std']:.4f}"
              + (f" (honest {honest:.4f}: early stopping's optimism {best['cv_optimism']:+.4f})" if honest else "")
              + f", {best['metric_name']} {best['metric']:.4f}, median best epoch {best['median_best_epoch']}")
        return 0

    return _cli.guarded(body)


if __name__ == "__main__":
    _args.leave(main())

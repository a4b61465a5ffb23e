"""`python -m sweeps.evaluate STUDY_FILE`: retrain the chosen configuration, score the held-out
test set once, print the result beside the CV estimate, and save the model.

    python -m sweeps.evaluate studies/digits.py [--config EXPORTED_FILE] [--storage URL]
                                                [--output MODEL_PATH] [--device auto|cpu|cuda]

The command: arguments in, `sweeps.results.evaluate.evaluate_study` called, `report` printed.
"""

from __future__ import annotations

import argparse

from sweeps import _args


def parser() -> argparse.ArgumentParser:
    """The command's arguments (the docs' command lines are checked against it)."""
    p = _args.parser("python -m sweeps.evaluate",
                    "Retrain the chosen configuration and score the held-out test set once.")
    p.add_argument("--config", metavar="FILE", help="a file written by python -m sweeps.export "
                   "(default: the study's best trial)")
    p.add_argument("--output", metavar="PATH", help="where to save the model (default: storage/<name>-model.pt)")
    p.add_argument("--device", choices=_args.DEVICES, default="auto")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The work's imports come after the arguments are read: --help and a wrong flag answer at once,
    # without loading torch and scikit-learn (seconds). A door is imported by nothing: no cycle hides here.
    from sweeps import _cli
    from sweeps.results.evaluate import evaluate_study, report

    def body() -> int:
        _cli.quiet_optuna()
        _cli.set_threads()
        device = _cli.resolve_device(args.device)
        spec, dataset = _cli.load(args.study_file)
        entry, _ = evaluate_study(spec, dataset, storage=args.storage, config_path=args.config,
                                  model_path=args.output, device=str(device))
        print(report(spec, entry))
        return 0

    return _cli.guarded(body)


if __name__ == "__main__":
    _args.leave(main())

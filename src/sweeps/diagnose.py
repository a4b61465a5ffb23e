"""`python -m sweeps.diagnose STUDY_FILE`: what limits the model, with the numbers that show it.

    python -m sweeps.diagnose studies/digits.py [--storage URL] [--set NAME=VALUE ...]
                                                [--output PATH] [--device auto|cpu|cuda]

The command: arguments in, `sweeps.results.diagnose.diagnose_study` called, its report printed.
"""

from __future__ import annotations

import argparse
import sys

from sweeps import _args


def parser() -> argparse.ArgumentParser:
    """The command's arguments (the docs' command lines are checked against it)."""
    p = _args.parser("python -m sweeps.diagnose", "Tell what limits the model: bias, optimization, "
                    "overfitting or mismatch.")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="change a threshold, e.g. --set overfit_gap=0.1 (docs: diagnose)")
    p.add_argument("--output", metavar="PATH", help="report file (default: storage/<name>-diagnosis.md)")
    p.add_argument("--device", choices=_args.DEVICES, default="auto")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The work's imports come after the arguments are read: --help and a wrong flag answer at once,
    # without loading torch and scikit-learn (seconds). A door is imported by nothing: no cycle hides here.
    from sweeps import _cli
    from sweeps.results.diagnose import Thresholds, diagnose_study

    def body() -> int:
        thresholds = Thresholds().with_settings(args.set)
        _cli.quiet_optuna()
        _cli.set_threads()
        device = _cli.resolve_device(args.device)
        spec, dataset = _cli.load(args.study_file)
        diagnosis = diagnose_study(spec, dataset, storage=args.storage, thresholds=thresholds, device=str(device),
                                   output=args.output,
                                   progress=lambda line: print(f"diagnose: {line}", file=sys.stderr, flush=True))
        print(diagnosis.report)
        print(f"\nReport written to {diagnosis.path} and attached to the study "
              f"(optuna-dashboard {diagnosis.storage}).")
        return 0

    return _cli.guarded(body)


if __name__ == "__main__":
    _args.leave(main())

"""`python -m sweeps.dashboard STUDY_FILE`: browse a study in optuna-dashboard.

    python -m sweeps.dashboard studies/digits.py [--storage URL] [--port 8080] [--host 127.0.0.1]

Starts optuna-dashboard on the study's storage (resolved as `run` does), prints the
study's address, and stops cleanly on Ctrl+C. Plain `optuna-dashboard sqlite:///storage/
NAME.db` shows the same: everything sweeps stores is an Optuna user attr, an intermediate
value, the study note or a plot that optuna-dashboard reads natively.
"""

from __future__ import annotations

import sys

from sweeps import _cli
from sweeps.errors import SweepsError
from sweeps.storage import describe, load_existing_study
from sweeps.study import load_study_file


def main(argv: list[str] | None = None) -> int:
    p = _cli.parser("python -m sweeps.dashboard", "Browse a study in optuna-dashboard.")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1; 0.0.0.0 to share on the network)")
    args = p.parse_args(argv)

    def body() -> int:
        from optuna_dashboard import run_server

        if not 0 < args.port < 65536:
            raise SweepsError(f"--port must be between 1 and 65535, got {args.port}.")
        _cli.quiet_optuna()
        spec = load_study_file(args.study_file)
        study, url = load_existing_study(spec.name, args.storage)
        shown_host = "localhost" if args.host in ("0.0.0.0", "::") else args.host
        print(f"optuna-dashboard for study '{spec.name}' ({describe(url)}):\n"
              f"  http://{shown_host}:{args.port}/dashboard/studies/{study._study_id}\n"
              "Press Ctrl+C to stop.", flush=True)
        try:
            run_server(study._storage, host=args.host, port=args.port)  # returns on Ctrl+C
        except OSError as e:
            raise SweepsError(f"cannot listen on {args.host}:{args.port} ({e.strerror}); "
                              "pass another --port.") from None
        except KeyboardInterrupt:
            pass
        print("\nDashboard stopped.", file=sys.stderr)
        return 0

    return _cli.guarded(body)


if __name__ == "__main__":
    sys.exit(main())

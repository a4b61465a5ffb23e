"""`python -m sweeps.dashboard STUDY_FILE`: browse a study in optuna-dashboard, read-only.

    python -m sweeps.dashboard studies/digits.py [--storage URL] [--port 8080] [--host 127.0.0.1]
                                                 [--allow-writes]

Starts optuna-dashboard on the study's storage (resolved as `run` does), prints the
study's address, and stops cleanly on Ctrl+C. Plain `optuna-dashboard sqlite:///storage/
NAME.db` shows the same: everything sweeps stores is an Optuna user attr, an intermediate
value, the study note or a plot that optuna-dashboard reads natively.

optuna-dashboard's API can also change a study: tell a running trial a value, delete a
study, rewrite notes. sweeps serves it **read-only** unless `--allow-writes` is given: any
request other than GET, HEAD or OPTIONS is answered 403 and changes nothing. There is no
login either way, so it listens on 127.0.0.1 unless `--host` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import socket
import socketserver
import sys
from collections.abc import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from sweeps import _args

READ_METHODS = ("GET", "HEAD", "OPTIONS")
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")


def read_only(app: Callable) -> Callable:
    """A WSGI app that passes reads to `app` and refuses every write with 403."""
    refusal = json.dumps({"reason": "this dashboard is read-only; restart python -m sweeps.dashboard "
                                    "with --allow-writes to change studies from the browser"}).encode()

    def guarded(environ: dict, start_response: Callable) -> Iterable[bytes]:
        if environ.get("REQUEST_METHOD", "GET").upper() not in READ_METHODS:
            start_response("403 Forbidden", [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(refusal)))])
            return [refusal]
        return app(environ, start_response)

    return guarded


def host_names(host: str, allowed: Iterable[str] = ()) -> set[str]:
    """The names a browser may use for this dashboard (its requests' `Host`): the address it
    listens on, this machine's loopback names when that is loopback, this machine's names and
    addresses when it listens on every interface, and the names given with --allowed-host."""
    names = {host.strip("[]").lower(), *(name.strip("[]").lower() for name in allowed)}
    if host in LOOPBACK_NAMES or host.startswith("127."):
        names |= set(LOOPBACK_NAMES)
    if host in ("0.0.0.0", "::", ""):
        names |= set(LOOPBACK_NAMES)
        try:
            hostname = socket.gethostname()
            names |= {hostname.lower(), socket.getfqdn().lower()}
            names |= set(socket.gethostbyname_ex(hostname)[2])
        except OSError:
            pass
    return names


def host_checked(app: Callable, names: set[str]) -> Callable:
    """A WSGI app that answers only requests whose `Host` is one of `names` (any port).

    Without it, a web page of any site could make the browser of someone running the dashboard
    read and, with --allow-writes, change their studies: it points its own domain at 127.0.0.1
    (DNS rebinding) and the requests arrive with that domain as their Host.
    """
    def guarded(environ: dict, start_response: Callable) -> Iterable[bytes]:
        host = environ.get("HTTP_HOST", "")
        if _name_of(host) not in names:
            reason = json.dumps({"reason": f"Host {host!r} is not a name of this dashboard; if it is the name you "
                                           "browse it by, restart python -m sweeps.dashboard with --allowed-host "
                                           "NAME"}).encode()
            start_response("403 Forbidden", [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(reason)))])
            return [reason]
        return app(environ, start_response)

    return guarded


def _name_of(host: str) -> str:
    """The name in a Host header, without its port: 'h:8080' -> 'h', '[::1]:8080' -> '::1'."""
    if host.startswith("["):
        return host[1:host.find("]")].lower() if "]" in host else host.lower()
    return (host.rsplit(":", 1)[0] if host.count(":") == 1 else host).lower()


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True  # the page loads several API calls at once


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass  # no line per request on the terminal


def parser() -> argparse.ArgumentParser:
    """The command's arguments (the docs' command lines are checked against it)."""
    p = _args.parser("python -m sweeps.dashboard", "Browse a study in optuna-dashboard (read-only by default).")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only). Another address "
                        "shows every study in the storage, without a login, to anyone who can reach "
                        "it (and lets them change them, with --allow-writes); prefer an SSH tunnel")
    p.add_argument("--allow-writes", action="store_true",
                   help="let the browser change the storage (notes, trial values, deleting studies)")
    p.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                   help="another name the dashboard is browsed by (a proxy's, an SSH tunnel's); requests for "
                        "any name but these and the address it listens on are refused")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # The work's imports come after the arguments are read: --help and a wrong flag answer at once,
    # without loading torch and scikit-learn (seconds). A door is imported by nothing: no cycle hides here.
    from optuna_dashboard import wsgi

    from sweeps import _cli
    from sweeps.errors import SweepsError
    from sweeps.spec.study import load_study_file
    from sweeps.store import internals
    from sweeps.store.storage import artifact_folder, describe, load_existing_study

    def body() -> int:

        if not 0 < args.port < 65536:
            raise SweepsError(f"--port must be between 1 and 65535, got {args.port}.")
        _cli.quiet_optuna()
        spec = load_study_file(args.study_file)
        study, url = load_existing_study(spec.name, args.storage)
        folder = artifact_folder(url, spec.name)
        store = None
        if folder.is_dir():  # models, exports and reports that evaluate, export and diagnose stored
            from optuna.artifacts import FileSystemArtifactStore

            store = FileSystemArtifactStore(folder)
        app = wsgi(internals.storage_of(study), artifact_store=store)
        if not args.allow_writes:
            app = read_only(app)
        app = host_checked(app, host_names(args.host, args.allowed_host))
        try:
            server = make_server(args.host, args.port, app, server_class=_ThreadingServer,
                                 handler_class=_QuietHandler)
        except OSError as e:
            raise SweepsError(f"cannot listen on {args.host}:{args.port} ({e.strerror}); "
                              "pass another --port.") from None
        shown_host = "localhost" if args.host in ("0.0.0.0", "::") else args.host
        mode = "read-write" if args.allow_writes else "read-only"
        print(f"optuna-dashboard for study '{spec.name}' ({describe(url)}), {mode}:\n"
              f"  http://{shown_host}:{args.port}/dashboard/studies/{internals.study_id(study)}\n"
              "Press Ctrl+C to stop.", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            server.server_close()
        print("\nDashboard stopped.", file=sys.stderr)
        return 0

    return _cli.guarded(body)


if __name__ == "__main__":
    _args.leave(main())

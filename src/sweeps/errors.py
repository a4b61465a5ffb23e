"""The one exception type a user sees, how a message names an option to its reader, and where it goes."""

import contextvars
import sys

# Who reads the messages: "python" (a notebook, a script: `sweeps.optimize(n_trials=3)`) or
# "cli" (`python -m sweeps.run --n-trials 3`); the command-line verbs set it (`_cli.guarded`).
READER: contextvars.ContextVar[str] = contextvars.ContextVar("sweeps_reader", default="python")


def option(name: str, value: str | bool = "") -> str:
    """An option as its reader writes it: `--n-trials N` on the command line, `n_trials=N` from Python
    (without a value: `--n-trials`, `n_trials`; a switch, value True: `--accept-changed-settings`,
    `accept_changed_settings=True`)."""
    if READER.get() == "cli":
        return "--" + name.replace("_", "-") + (f" {value}" if value and value is not True else "")
    return f"{name}={value}" if value else name


class Console:
    """`sys.stdout` or `sys.stderr` as it is when written to: the default of an `out=` argument.

    `out=sys.stdout` as a default binds the stream that was there when the module was imported
    (a notebook cell's, a test's capture) and writes to it after it is gone.
    """

    def __init__(self, name: str) -> None:
        self.name = name

    def write(self, text: str) -> int:
        return getattr(sys, self.name).write(text)

    def flush(self) -> None:
        getattr(sys, self.name).flush()


STDOUT, STDERR = Console("stdout"), Console("stderr")


class SweepsError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The message names the place, the bad value, the rule and the fix. The command-line
    verbs print it on stderr, without a traceback, and exit with code 2.
    """


class Terminated(KeyboardInterrupt):
    """SIGTERM (what Slurm, Kubernetes and `kill` send), handled exactly like Ctrl+C.

    A KeyboardInterrupt, so that every path that closes an interrupted trial (Optuna's and
    ours) closes a terminated one too; the CLI exits with 143 instead of 130.
    """


class TrialFailed(Exception):
    """A failure that ends one trial, not the sweep (out of memory); its reason is recorded."""


class FinishedElsewhere(Exception):
    """A trial this process was training was finished by another (the dashboard with
    --allow-writes, a script): its training stops, nothing more is written to it, and the
    sweep goes on."""

    def say(self) -> None:
        """The one line that tells the user, on stderr."""
        print(f"sweeps: {self}.", file=sys.stderr, flush=True)

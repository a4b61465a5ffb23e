"""The one exception type a user sees."""


class SweepsError(Exception):
    """A problem with the user's input or environment, explained in one line.

    The message names the place, the bad value, the rule and the fix. The command-line
    verbs print it on stderr, without a traceback, and exit with code 2.
    """

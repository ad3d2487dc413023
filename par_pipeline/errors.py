"""The one exception type the CLI turns into a one-line error."""


class ParError(Exception):
    """A user-facing failure: the message names the file and the fix, on one line."""

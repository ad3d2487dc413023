"""The one exception type the CLI turns into a one-line error."""


class ParError(Exception):
    """A user-facing failure: the message names the file and the fix, on one line."""


def one_line(exc: BaseException) -> str:
    """The user's message of a ParError, also when a DataLoader worker raised it (torch re-raises it in the main
    process with the worker's traceback folded into the message; the message proper is its last line)."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(f"{type(exc).__name__}: ", 1)[-1]
    return " ".join(text.split())

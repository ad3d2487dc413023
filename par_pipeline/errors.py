"""The one exception type the CLI turns into a one-line error, and the rule that keeps credentials out of it."""
import re


class ParError(Exception):
    """A user-facing failure: the message names the file and the fix, on one line."""


def one_line(exc: BaseException) -> str:
    """The user's message of a ParError, also when a DataLoader worker raised it (torch re-raises it in the main
    process with the worker's traceback folded into the message; the message proper is its last line)."""
    text = str(exc).strip()
    if "Original Traceback" in text:
        last = text.splitlines()[-1]
        text = last.split(f"{type(exc).__name__}: ", 1)[-1]
    return masked(" ".join(text.split()))


_CREDENTIALS = re.compile(r"(\w+://)[^/@\s]+@")


def masked(text: str) -> str:
    """URLs with their user:password replaced (`rtsp://***@host/...`): errors, warnings, records and pages name
    servers and cameras, never credentials."""
    return _CREDENTIALS.sub(r"\1***@", text)

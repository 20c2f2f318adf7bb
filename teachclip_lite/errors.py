"""The command line's user errors: a failure the user can act on is one line saying what went wrong and
what to do (`UserError`), a warning is one line too, and a file name that is not valid UTF-8 is shown
escaped. cli.py prints them; every module that reads user input raises them."""
from __future__ import annotations

import os
import sys

PROG = "teachclip-lite"


class UserError(Exception):
    """A failure the user can act on; str() is the one line the command line prints."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def warn(msg: str) -> None:
    print(f"{PROG}: warning: {one_line(msg)}", file=sys.stderr, flush=True)


def one_line(text: str, limit: int = 400) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def shown(name: str) -> str:
    """A file name as text: names that are not valid UTF-8 (kept losslessly as surrogate escapes) show their
    odd bytes as \\xNN, so the output stays valid UTF-8 (and valid JSON)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")

"""The package's exception for the user's mistakes (bad files, rows, options or arguments), and the argparse
parser of the plain commands that raises it.

``clip-agiqa`` prints an ``InputError`` as one line (``clip-agiqa: error: ...``) and exits 1; anything else
is a bug and keeps its traceback. It is a ``ValueError``, so callers that caught those still do.
"""

from __future__ import annotations

import argparse
import errno
import re

from .text import did_you_mean


class InputError(ValueError):
    """A mistake in what the user gave (a file, a row, an option): the message names it and says what to do."""


class UsageError(InputError):
    """A mistyped command, option or value: one line with the valid choices, exit status 2 (as argparse)."""

    exit_status = 2


class CommandParser(argparse.ArgumentParser):
    """argparse for export/score/benchmark/compare: a mistake is a ``UsageError`` (one ``clip-agiqa: error:``
    line, exit status 2, as fit/validate/test/predict give), not argparse's usage dump and exit."""

    def error(self, message: str):
        unrecognized = re.match(r"unrecognized arguments: (\S+)", message)
        if unrecognized and unrecognized.group(1).startswith("-"):
            option = unrecognized.group(1).split("=")[0]
            options = [name for action in self._actions for name in action.option_strings if name.startswith("--")]
            raise UsageError(f"unknown option {option}{did_you_mean(option, options)}")
        raise UsageError(message)


def _chain(error: BaseException | None):
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def input_error(error: BaseException) -> BaseException | None:
    """The user's mistake (an ``InputError``) in the error's chain: jsonargparse and Lightning wrap errors raised
    while building the classes."""
    return next((link for link in _chain(error) if isinstance(link, InputError)), None)


def disk_full(error: BaseException) -> OSError | None:
    return next((link for link in _chain(error) if isinstance(link, OSError) and link.errno == errno.ENOSPC), None)

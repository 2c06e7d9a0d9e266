"""The package's exception for the user's mistakes: bad files, rows, options or arguments.

``clip-agiqa`` prints an ``InputError`` as one line (``clip-agiqa: error: ...``) and exits 1; anything else
is a bug and keeps its traceback. It is a ``ValueError``, so callers that caught those still do.
"""


class InputError(ValueError):
    """A mistake in what the user gave (a file, a row, an option): the message names it and says what to do."""


class UsageError(InputError):
    """A mistyped command, option or value: one line with the valid choices, exit status 2 (as argparse)."""

    exit_status = 2

"""CSV files people open in spreadsheets, safe from formula injection, and read back as written.

A text cell (a file name, a prompt, an error) that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
return, also after spaces or line breaks, is run as a formula by Excel, LibreOffice and Google Sheets. Such cells
are written with a leading ``'`` (what OWASP recommends and spreadsheets show as text), and the package's readers
strip it again.
Numbers (``-0.25``) are never changed. A cell that already starts with quotes before such a character gets
one more, so reading gives back exactly what was written: ``unescape_formula(escape_formula(v)) == v``.

Writers: ``safe_writer(handle)`` (a ``csv.writer`` whose rows are escaped). Readers: ``unescape_formula`` on
each text cell read.
"""

from __future__ import annotations

import csv

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
LEADING_BLANKS = " \n"  # passed over before a formula's first character


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _needs_escape(text: str) -> bool:
    # Spreadsheets skip leading spaces and line breaks before a formula: " =1+1" and "\n=1+1" run too.
    return text.lstrip("'").lstrip(LEADING_BLANKS).startswith(FORMULA_STARTS) and not _is_number(text)


def escape_formula(value):
    """``value`` as a spreadsheet shows it as text: ``'`` before a text cell a spreadsheet would run."""
    return "'" + value if isinstance(value, str) and _needs_escape(value) else value


def unescape_formula(value):
    """A cell read from a file written with ``escape_formula``, as it was before escaping."""
    if isinstance(value, str) and value.startswith("'") and _needs_escape(value[1:]):
        return value[1:]
    return value


class _SafeWriter:
    def __init__(self, handle, **options):
        self._writer = csv.writer(handle, **options)

    def writerow(self, row):
        return self._writer.writerow([escape_formula(value) for value in row])

    def writerows(self, rows):
        for row in rows:
            self.writerow(row)


def safe_writer(handle, **options) -> _SafeWriter:
    """A ``csv.writer`` (same ``writerow``/``writerows``) that escapes every text cell (``escape_formula``)."""
    return _SafeWriter(handle, **options)

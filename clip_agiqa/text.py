"""Small text helpers shared by the package's messages."""

from __future__ import annotations

import difflib
from typing import Iterable

MAX_LISTED = 10  # items named in one message; the rest are counted


def first_and_more(items: Iterable, limit: int = MAX_LISTED, separator: str = ", ") -> str:
    """The first ``limit`` items joined, and how many more there are: ``a, b, c and 7 more``."""
    items = [str(item) for item in items]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return separator.join(items[:limit]) + more


def did_you_mean(given: str, choices) -> str:
    """`` (did you mean a or b?)`` with the choices closest to a mistyped ``given``; empty when none is close."""
    close = difflib.get_close_matches(given, list(choices), n=3, cutoff=0.6)
    return f" (did you mean {' or '.join(close)}?)" if close else ""

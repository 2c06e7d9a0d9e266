"""The CSV of predicted scores (``file_name,score,error``), shared by ``predict`` and ``QualityScorer``; no Lightning."""

from __future__ import annotations

import csv
import warnings
from pathlib import Path


def write_scores(path: Path, rows, errors: dict[str, str] | None = None) -> None:
    """``file_name,score,error`` rows to a CSV, written atomically (a killed run leaves no half-written file).

    ``rows`` are ``(file_name, score)``; a name in ``errors`` (an unreadable image) gets an empty score and
    the reason in ``error``, which is empty for every other image.
    """
    errors = errors or {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "score", "error"])
        writer.writerows((name, "" if name in errors else f"{score:.6f}", errors.get(name, ""))
                         for name, score in rows)
    partial.replace(path)


def warn_unreadable(errors: dict[str, str], total: int, path: Path) -> None:
    """One warning that counts and names the images listed without a score."""
    if errors:
        warnings.warn(f"{len(errors)} of {total} image(s) could not be read and have no score in {path} "
                      f"(see its error column): {', '.join(list(errors)[:5])}"
                      + (f" and {len(errors) - 5} more" if len(errors) > 5 else ""), stacklevel=2)

"""The CSV of predicted scores, shared by ``predict``, ``clip-agiqa score`` and ``QualityScorer``; no Lightning.

Columns: ``file_name``, ``prompt`` (when prompts were given), ``score`` for a one-target model or one column
per target (``quality``, ``align``, ...), and ``error`` (empty, or why the image could not be read; its
scores are then empty).
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path


def score_columns(targets: list[str] | None) -> list[str]:
    return ["score"] if not targets or len(targets) == 1 else list(targets)


def _cells(scores, width: int, failed: bool) -> list[str]:
    values = list(scores) if isinstance(scores, (list, tuple)) else [scores]
    if failed or any(v is None or math.isnan(v) for v in values):
        return [""] * width
    return [f"{float(v):.6f}" for v in values]


def write_scores(path: Path, rows, errors: dict[str, str] | None = None, targets: list[str] | None = None,
                 prompts: dict[str, str] | None = None) -> None:
    """Score rows to a CSV, written atomically (a killed run leaves no half-written file).

    ``rows`` are ``(file_name, score)`` with one float, or one per target; a name in ``errors`` (an unreadable
    image) gets empty scores and the reason in ``error``, which is empty for every other image."""
    errors = errors or {}
    columns = score_columns(targets)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", *(["prompt"] if prompts is not None else []), *columns, "error"])
        for name, scores in rows:
            prompt = [prompts.get(name, "")] if prompts is not None else []
            writer.writerow([name, *prompt, *_cells(scores, len(columns), name in errors), errors.get(name, "")])
    partial.replace(path)


def warn_unreadable(errors: dict[str, str], total: int, path: Path) -> None:
    """One warning that counts and names the images listed without a score."""
    if errors:
        warnings.warn(f"{len(errors)} of {total} image(s) could not be read and have no score in {path} "
                      f"(see its error column): {', '.join(list(errors)[:5])}"
                      + (f" and {len(errors) - 5} more" if len(errors) > 5 else ""), stacklevel=2)

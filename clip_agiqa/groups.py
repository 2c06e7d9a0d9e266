"""Results per group (generator, task ...): SRCC and PLCC of the test images of each group, with counts, and a flag
on groups too small to read (a correlation over a handful of images is mostly noise).

``group_results`` computes them from per-image MOS, scores and group labels; ``write_group_table`` writes
``test_groups.csv`` (``target,group,value,n,srcc,plcc,too_small``) and ``group_markdown`` renders the same as a
table for a summary. Nothing here knows Lightning or the data side: callers hand over plain values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .files import atomic_write
from .metrics import correlation
from .safe_csv import safe_writer

GROUPS_FILE = "test_groups.csv"
MIN_GROUP_SIZE = 20  # below this, SRCC's spread over resamples is above about 0.2: flagged, not hidden
COLUMNS = ("target", "group", "value", "n", "srcc", "plcc", "too_small")


@dataclass(frozen=True)
class GroupResult:
    """One group's figures for one target."""

    target: str
    group: str  # the grouping, e.g. generator
    value: str  # the group, e.g. DALLE3
    n: int
    srcc: float
    plcc: float

    @property
    def too_small(self) -> bool:
        return self.n < MIN_GROUP_SIZE or math.isnan(self.srcc)


def group_results(target: str, mos, scores, labels: dict[str, list[str | None]]) -> list[GroupResult]:
    """Per grouping (``labels``: grouping -> one label per image, None where an image has none) and per label,
    the SRCC and PLCC of ``scores`` against ``mos``; labels in sorted order."""
    mos, scores = np.asarray(mos, dtype=np.float64), np.asarray(scores, dtype=np.float64)
    results = []
    for group, values in labels.items():
        values = np.asarray([v if v is not None else "" for v in values], dtype=object)
        for value in sorted({v for v in values if v}):
            chosen = values == value
            results.append(GroupResult(target, group, value, int(chosen.sum()),
                                       correlation("srcc", scores[chosen], mos[chosen]),
                                       correlation("plcc", scores[chosen], mos[chosen])))
    return results


def labels_of(names: list[str], groups_by_name: dict[str, dict[str, str]]) -> dict[str, list[str | None]]:
    """Each grouping's label of every named image (None where it has none); groupings no image has are left out."""
    groupings = sorted({group for name in names for group in groups_by_name.get(name, {})})
    return {group: [groups_by_name.get(name, {}).get(group) for name in names] for group in groupings}


def write_group_table(path: Path, results: list[GroupResult]) -> Path:
    with atomic_write(path, "w", newline="") as handle:
        writer = safe_writer(handle)  # labels come from the data: safe to open in a spreadsheet
        writer.writerow(COLUMNS)
        writer.writerows([r.target, r.group, r.value, r.n, number(r.srcc), number(r.plcc), int(r.too_small)]
                         for r in results)
    return path


def number(value: float) -> str:
    return "" if math.isnan(value) else f"{value:.6f}"


def group_markdown(results: list[GroupResult]) -> list[str]:
    """Markdown lines: one table per target and grouping, too-small groups marked."""
    lines = []
    for target, group in dict.fromkeys((r.target, r.group) for r in results):
        rows = [r for r in results if (r.target, r.group) == (target, group)]
        lines += ["", f"Per {group} ({target}; * fewer than {MIN_GROUP_SIZE} images or undefined: too small to read)",
                  "", f"| {group} | n | SRCC | PLCC |", "|---|---|---|---|"]
        lines += [f"| {r.value}{' *' if r.too_small else ''} | {r.n} | {shown(r.srcc)} | {shown(r.plcc)} |"
                  for r in rows]
    return lines


def shown(value: float) -> str:
    return "-" if math.isnan(value) else f"{value:.4f}"


def write_test_groups(folder: Path, targets: list[str], names: list[str], mos: list, scores: list,
                      groups_by_name: dict[str, dict[str, str]]) -> list[Path]:
    """``test_groups.csv`` in ``folder`` for a test's predictions (``mos``/``scores``: per image a float for one
    target, a list per target for several), when the images carry groups; nothing otherwise."""
    labels = labels_of(names, groups_by_name)
    if not labels:
        return []
    results = []
    for position, target in enumerate(targets):
        results += group_results(target, target_column(mos, position, len(targets)),
                                 target_column(scores, position, len(targets)), labels)
    return [write_group_table(Path(folder) / GROUPS_FILE, results)]


def target_column(values: list, position: int, targets: int) -> list[float]:
    """One target's values: the floats themselves for one target, the ``position``-th of each list for several."""
    return list(values) if targets == 1 else [value[position] for value in values]

"""Results per group (generator, task ...): SRCC and PLCC of the test images of each group, with counts, and a flag
on groups too small to read (a correlation over a handful of images is mostly noise).

``group_results`` computes them from per-image MOS, scores and group labels; ``write_group_table`` writes
``test_groups.csv`` (``target,group,value,n,srcc,plcc,too_small``) and ``group_markdown`` renders the same as a
table; ``benchmark_group_lines`` pools a benchmark's splits into its summary (``pooled_groups``, also read by
``clip-agiqa compare``). Nothing here knows Lightning or the data side: callers hand over plain values.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .csv_cells import safe_writer
from .errors import InputError
from .files import atomic_write, read_bytes
from .metrics import correlation
from .run_files import GROUPS_FILE

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
    for group, given in labels.items():
        values = np.asarray([v if v is not None else "" for v in given], dtype=object)
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


# --- over a benchmark's splits ----------------------------------------------------------------------------------
MAX_GROUPS_FILE_BYTES = 64 << 20  # 24 generators x 58 tasks x targets is a few kB


def read_group_table(path: Path) -> list[GroupResult]:
    """The rows of a ``test_groups.csv`` (a regular file of bounded size); a damaged one is one line naming it."""
    try:
        rows = list(csv.DictReader(io.StringIO(read_bytes(path, MAX_GROUPS_FILE_BYTES).decode("utf-8"))))
        return [GroupResult(r["target"], r["group"], r["value"], int(r["n"]), as_number(r["srcc"]),
                            as_number(r["plcc"])) for r in rows]
    except (KeyError, TypeError, ValueError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{path}: not a {GROUPS_FILE} ({str(error)[:80]})") from None


def as_number(cell: str) -> float:
    return float(cell) if cell.strip() else math.nan


def pooled_groups(out: Path) -> tuple[int, dict[tuple[str, str, str], list[GroupResult]]]:
    """The number of a benchmark folder's splits with a ``test_groups.csv``, and their rows pooled by (target,
    grouping, group), in the order first seen."""
    tables = [read_group_table(path) for path in sorted(Path(out).glob(f"split_*/{GROUPS_FILE}"))]
    pooled: dict[tuple[str, str, str], list[GroupResult]] = {}
    for result in (r for table in tables for r in table):
        pooled.setdefault((result.target, result.group, result.value), []).append(result)
    return len(tables), pooled


def pooled_cells(results: list[GroupResult]) -> tuple[str, str, str, str]:
    """One group's figures over the splits: the too-small flag (" *" where it was in any split), its mean count,
    and its SRCC and PLCC as mean ± std."""
    flag = " *" if any(r.too_small for r in results) else ""
    return (flag, f"{np.mean([r.n for r in results]):.0f}", spread([r.srcc for r in results]),
            spread([r.plcc for r in results]))


POOLED_NOTE = (f"Mean ± std over the splits; n: mean test images per split; * too small to read in some split "
               f"(fewer than {MIN_GROUP_SIZE} images or undefined).")


def benchmark_group_lines(out: Path) -> list[str]:
    """Markdown: per target and grouping, each group's mean SRCC/PLCC (± std) over the splits' ``test_groups.csv``,
    its mean count, and a flag where it was too small in any split; empty when no split has groups."""
    splits, pooled = pooled_groups(out)
    if not pooled:
        return []
    lines = ["", "## Per group", "", f"{splits} split(s). {POOLED_NOTE}"]
    for target, group in dict.fromkeys((t, g) for t, g, _ in pooled):
        lines += ["", f"### {group} ({target})", "", f"| {group} | n | SRCC | PLCC |", "|---|---|---|---|"]
        for (t, g, value), results in pooled.items():
            if (t, g) == (target, group):
                flag, count, srcc, plcc = pooled_cells(results)
                lines.append(f"| {value}{flag} | {count} | {srcc} | {plcc} |")
    return lines


def spread(values: list[float]) -> str:
    known = [v for v in values if not math.isnan(v)]
    if not known:
        return "-"
    return f"{np.mean(known):.4f}" + (f" ± {np.std(known, ddof=1):.4f}" if len(known) > 1 else "")

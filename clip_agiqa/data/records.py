"""One sample record and the checks every annotation source goes through."""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")


@dataclass
class Record:
    """An image with its MOS. ``file_name`` is relative to the dataset root and names the sample."""

    file_name: str
    path: Path
    mos: float
    prompt: str | None = None
    generator: str | None = None
    targets: dict[str, float] = field(default_factory=dict)


def parse_mos(value, source: str, row: int, column: str) -> float:
    """A finite float MOS, or an error that names the file, row and column."""
    try:
        mos = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{source}, row {row}: {column} {value!r} is not a number") from None
    if not math.isfinite(mos):
        raise ValueError(f"{source}, row {row}: {column} is {value!r}; every MOS must be a finite number")
    return mos


def require_columns(columns, required: list[str], source: str) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise ValueError(f"{source}: missing column(s) {', '.join(missing)}; the columns are {', '.join(columns)}")


def check_records(records: list[Record], source: str) -> None:
    """No empty set, no duplicated names, every image present (all missing names reported at once)."""
    if not records:
        raise ValueError(f"{source}: no samples")
    duplicated = [name for name, count in Counter(r.file_name for r in records).items() if count > 1]
    if duplicated:
        raise ValueError(f"{source}: duplicated file name(s) {', '.join(duplicated[:5])}"
                         + (f" and {len(duplicated) - 5} more" if len(duplicated) > 5 else ""))
    missing = [r.file_name for r in records if not r.path.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{source}: {len(missing)} of {len(records)} image(s) not found under {records[0].path.parent}, "
            f"e.g. {', '.join(missing[:5])}"
        )


def list_images(root: Path) -> list[Path]:
    """Every image file under root, in a stable (sorted) order."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def find_image_folder(root: Path, names: list[str], layout: str) -> Path:
    """The folder that holds the named images: root itself, or the one sub-folder of root where they sit
    (archives often unpack into one folder). ``layout`` describes the expected layout for the error."""
    probe = [n for n in names[:20] if n]
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} not found; expected {layout}")
    if any((root / n).is_file() for n in probe):
        return root
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if any((folder / n).is_file() for n in probe):
            return folder
    return root  # check_records then reports every missing image at once


def read_xlsx_rows(path: Path) -> list[tuple]:
    """The rows (values) of the first sheet of an .xlsx file, or a clear error naming it."""
    try:
        import openpyxl
    except ImportError:
        raise ImportError(f"reading {path} needs openpyxl: pip install openpyxl") from None
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises several unrelated types for a damaged file
        raise ValueError(f"cannot read spreadsheet {path}: {error}") from error
    try:
        return [tuple(row) for row in workbook.worksheets[0].iter_rows(values_only=True)]
    finally:
        workbook.close()


def duplicated_rows(names: list[str], first_row: int) -> dict[str, list[int]]:
    """Every name listed more than once, with the (file) rows where it appears."""
    rows: dict[str, list[int]] = {}
    for offset, name in enumerate(names):
        rows.setdefault(name, []).append(first_row + offset)
    return {name: found for name, found in rows.items() if len(found) > 1}


def require_unique(names: list[str], source: str, first_row: int) -> None:
    """A clear error naming the file and rows of the first duplicated names."""
    duplicated = duplicated_rows(names, first_row)
    if duplicated:
        shown = "; ".join(f"{name} at rows {', '.join(map(str, rows))}" for name, rows in list(duplicated.items())[:5])
        raise ValueError(f"{source}: {len(duplicated)} duplicated name(s): {shown}")

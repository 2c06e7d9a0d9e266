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

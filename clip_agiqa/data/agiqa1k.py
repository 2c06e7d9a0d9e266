"""AGIQA-1K (Zhang et al., 2023): 1,080 rows of 2 generators (DeepAI, DreamStudio), MOS 0-5.

Download: https://github.com/lcysyzxdxc/AGIQA-1k-Database (``AIGC_MOS_Zscore.xlsx`` and ``file.zip``,
which unzips to ``file/``).

Known quirks of the published spreadsheet: ``dreamStudio_8_9_1_1.jpg`` is listed twice with different
MOS (0.44 and 2.08) and ``dreamStudio_8_5_0_0.jpg`` has no row. By default a name listed twice is
left out (its label is ambiguous) with a warning, giving 1,078 samples; ``duplicates: first`` keeps
the first row (1,079), ``duplicates: error`` refuses. An image without a row is not used.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

from .base import MOSDataModule
from .readers import Reader
from .records import (
    MissingFile,
    Record,
    column,
    duplicated_rows,
    find_image_folder,
    generator_of,
    parse_mos,
    parse_names,
    read_xlsx_rows,
    require_unique,
    table,
)

LAYOUT = "AGIQA-1K as downloaded: AIGC_MOS_Zscore.xlsx (Image, Prompt, MOS) and the images in file/"
Duplicates = Literal["drop", "first", "error"]


class AGIQA1KReader(Reader):
    """``AIGC_MOS_Zscore.xlsx`` (Image, Prompt, MOS) and the images in ``file/``.

    Args:
        duplicates: what to do with a name listed twice: ``drop`` it (default; it is then in ``left_out``),
            keep the ``first`` row, or raise an ``error``.
    """

    name = "AGIQA1K"
    mos_scale = (0.0, 5.0)
    annotation_file = "AIGC_MOS_Zscore.xlsx"
    image_folder = "file"

    def __init__(self, duplicates: Duplicates = "drop"):
        super().__init__()
        self.duplicates = duplicates

    def read(self, root: Path) -> list[Record]:
        path = root / self.annotation_file
        if not path.is_file():
            raise MissingFile(f"{path} not found: expected {LAYOUT}")
        rows = table(read_xlsx_rows(path), ["Image", "Prompt", "MOS"], str(path))
        names = parse_names(column(rows, "Image"), str(path), "Image")
        keep = self._resolve_duplicates(names, [number for number, _ in rows], path)
        folder = root / self.image_folder
        if not folder.is_dir():
            folder = find_image_folder(root, names, LAYOUT)
        kept = [(name, number, row) for name, (number, row) in zip(names, rows) if keep.get(name) == number]
        mos = parse_mos([(number, row["MOS"]) for _, number, row in kept], str(path), "MOS")
        return [Record(name, folder / name, {"quality": score}, prompt=str(row["Prompt"] or "").strip() or None,
                       generator=generator_of(name), where=f"{path}, row {number}")
                for (name, number, row), score in zip(kept, mos)]

    def _resolve_duplicates(self, names: list[str], rows: list[int], path) -> dict[str, int]:
        """Name -> the row number kept, following ``duplicates``."""
        if self.duplicates == "error":
            require_unique(names, str(path), rows)
        duplicated = duplicated_rows(names, rows)
        keep: dict[str, int] = {}
        for name, row in zip(names, rows):
            keep.setdefault(name, row)
        if duplicated:
            shown = "; ".join(f"{n} (rows {', '.join(map(str, r))})" for n, r in duplicated.items())
            action = "left out" if self.duplicates == "drop" else "kept at its first row"
            warnings.warn(f"{path}: {len(duplicated)} name(s) listed more than once, {action}: {shown}", stacklevel=4)
            if self.duplicates == "drop":
                for name in duplicated:
                    del keep[name]
                self.left_out = frozenset(duplicated)
        return keep


class AGIQA1K(MOSDataModule):
    """AGIQA-1K.

    Args:
        duplicates: what to do with a name listed twice: ``drop`` it (default), keep the ``first`` row,
            or raise an ``error``.
        (the rest: see ``MOSDataModule``)
    """

    def __init__(self, root: str, duplicates: Duplicates = "drop", **kwargs):
        super().__init__(root, reader=AGIQA1KReader(duplicates), **kwargs)
        self.duplicates = duplicates

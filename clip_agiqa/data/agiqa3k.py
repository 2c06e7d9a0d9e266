"""AGIQA-3K (Li et al., 2023): 2,982 images of 6 generators for 300 prompts, with quality and alignment MOS.

Download: https://github.com/lcysyzxdxc/AGIQA-3k-Database (``data.csv`` and the image archive). The root
holds ``data.csv`` with the images beside it or in one sub-folder.
"""

from __future__ import annotations

import csv
from typing import Literal

from .base import MOSDataModule
from .records import Record, find_image_folder, parse_mos, require_columns, require_unique

TARGET_COLUMNS = {"quality": "mos_quality", "align": "mos_align"}
LAYOUT = "AGIQA-3K as downloaded: data.csv (name,prompt,...,mos_quality,...,mos_align,...) and the images beside it"


def generator_of(name: str) -> str:
    """``sd1.5_lowcorr_210.jpg`` -> ``sd1.5``."""
    return name.split("_", 1)[0]


class AGIQA3K(MOSDataModule):
    """AGIQA-3K.

    Args:
        target: ``quality`` (mos_quality, the paper's table) or ``align`` (mos_align, text-image alignment).
        (the rest: see ``MOSDataModule``)
    """

    annotation_file = "data.csv"
    mos_range = (0.0, 5.0)

    def __init__(self, root: str, target: Literal["quality", "align"] = "quality", **kwargs):
        super().__init__(root, **kwargs)
        if target not in TARGET_COLUMNS:
            raise ValueError(f"AGIQA3K target must be one of {', '.join(TARGET_COLUMNS)}, got {target!r}")
        self.target = target

    def load_records(self) -> list[Record]:
        path = self.root / self.annotation_file
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: expected {LAYOUT}")
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            require_columns(reader.fieldnames or [], ["name", "prompt", *TARGET_COLUMNS.values()], str(path))
            rows = list(reader)
        if not rows:
            raise ValueError(f"{path}: no rows")
        names = [(row["name"] or "").strip() for row in rows]
        for row_number, name in enumerate(names, start=2):
            if not name:
                raise ValueError(f"{path}, row {row_number}: empty name")
        require_unique(names, str(path), first_row=2)
        folder = find_image_folder(self.root, names, LAYOUT)
        records = []
        for row_number, (name, row) in enumerate(zip(names, rows), start=2):
            targets = {key: parse_mos(row[column], str(path), row_number, column)
                       for key, column in TARGET_COLUMNS.items()}
            records.append(Record(name, folder / name, targets[self.target], prompt=row["prompt"].strip(),
                                  generator=generator_of(name), targets=targets))
        return records

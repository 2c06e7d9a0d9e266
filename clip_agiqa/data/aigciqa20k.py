"""AIGCIQA-20K (NTIRE 2024 AIGC quality challenge, Li et al.): 13,999 labelled images of 15 generators.

Download: the dataset authors' page (https://www.modelscope.cn/datasets/lcysyzxdxc/AIGCQA-30K-Image or
the NTIRE 2024 challenge page). The root holds ``info_train.csv`` (no header row: name,prompt,mos, MOS
0-5) and the images beside it or in one sub-folder. The challenge's validation and test labels were
never published, so every split is drawn from ``info_train.csv``.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .base import MOSDataModule
from .readers import Reader
from .records import (
    MissingFile,
    Record,
    find_image_folder,
    generator_of,
    listed,
    parse_mos,
    parse_names,
    read_csv_rows,
    require_unique,
)

LAYOUT = "AIGCIQA-20K as downloaded: info_train.csv (no header: name,prompt,mos) and the images beside it"


def is_header(row: list[str]) -> bool:
    return (len(row) >= 3 and row[0].strip().lower() in ("name", "file_name", "image")
            and row[2].strip().lower() == "mos")


class AIGCIQA20KReader(Reader):
    """``info_train.csv`` (no header: name,prompt,mos) and the images beside it or in one sub-folder."""

    name = "AIGCIQA20K"
    mos_scale = (0.0, 5.0)
    annotation_file = "info_train.csv"

    def read(self, root: Path) -> list[Record]:
        path = root / self.annotation_file
        if not path.is_file():
            raise MissingFile(f"{path} not found: expected {LAYOUT}")
        rows = read_csv_rows(path)
        if rows and is_header(rows[0][1]):
            rows = rows[1:]  # a copy saved with a header
        if not rows:
            raise InputError(f"{path}: no rows")
        wrong = [f"row {number} has {len(row)}" for number, row in rows if len(row) != 3]
        if wrong:
            raise InputError(f"{path}: expected 3 fields (name,prompt,mos) in every row; {listed(wrong)}"
                             + ("; info_val.csv has no MOS" if all(len(row) == 2 for _, row in rows) else ""))
        numbers = [number for number, _ in rows]
        names = parse_names([(number, row[0]) for number, row in rows], str(path), "name")
        require_unique(names, str(path), numbers)
        folder = find_image_folder(root, names, LAYOUT)
        mos = parse_mos([(number, row[2]) for number, row in rows], str(path), "mos")
        return [Record(name, folder / name, {"quality": score}, prompt=row[1].strip() or None,
                       generator=generator_of(name, from_end=True),
                       where=f"{path}, row {number}")
                for name, score, (number, row) in zip(names, mos, rows)]


class AIGCIQA20K(MOSDataModule):
    """AIGCIQA-20K (train release). Args: see ``MOSDataModule``."""

    def __init__(self, root: str, **kwargs):
        super().__init__(root, reader=AIGCIQA20KReader(), **kwargs)

"""AGIQA-3K (Li et al., 2023): 2,982 images of 6 generators for 300 prompts, with quality and alignment MOS.

Download: https://github.com/lcysyzxdxc/AGIQA-3k-Database (``data.csv`` and the image archive). The root
holds ``data.csv`` with the images beside it or in one sub-folder.
"""

from __future__ import annotations

from typing import Literal

from .base import MOSDataModule
from .records import (Record, column, find_image_folder, parse_names, parse_targets, read_csv_rows, require_unique,
                      selected_targets, table)

TARGET_COLUMNS = {"quality": "mos_quality", "align": "mos_align"}
Target = Literal["quality", "align"]
LAYOUT = "AGIQA-3K as downloaded: data.csv (name,prompt,...,mos_quality,...,mos_align,...) and the images beside it"


def generator_of(name: str) -> str:
    """``sd1.5_lowcorr_210.jpg`` -> ``sd1.5``."""
    return name.split("_", 1)[0]


class AGIQA3K(MOSDataModule):
    """AGIQA-3K.

    Args:
        target: ``quality`` (mos_quality, the paper's table) or ``align`` (mos_align, text-image alignment), or
            both as a list (``[quality, align]``: one model, one output each).
        (the rest: see ``MOSDataModule``)
    """

    annotation_file = "data.csv"
    mos_range = (0.0, 5.0)

    def __init__(self, root: str, target: Target | list[Target] = "quality", **kwargs):
        super().__init__(root, **kwargs)
        selected_targets(target, TARGET_COLUMNS, "AGIQA3K")
        self.target = target

    def load_records(self) -> list[Record]:
        path = self.root / self.annotation_file
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: expected {LAYOUT}")
        rows = table(read_csv_rows(path), ["name", "prompt", *TARGET_COLUMNS.values()], str(path))
        names = parse_names(column(rows, "name"), str(path), "name")
        require_unique(names, str(path), [number for number, _ in rows])
        by_column = parse_targets(rows, list(TARGET_COLUMNS.values()), str(path))
        targets = {key: by_column[name] for key, name in TARGET_COLUMNS.items()}
        folder = find_image_folder(self.root, names, LAYOUT)
        records = []
        for index, (name, (_, row)) in enumerate(zip(names, rows)):
            values = {key: mos[index] for key, mos in targets.items()}
            records.append(Record(name, folder / name, values[self.targets[0]], prompt=(row["prompt"] or "").strip(),
                                  generator=generator_of(name), targets=values))
        return records

"""AGIQA-3K (Li et al., 2023): 2,982 images of 6 generators for 300 prompts, with quality and alignment MOS.

Download: https://github.com/lcysyzxdxc/AGIQA-3k-Database (``data.csv`` and the image archive). The root
holds ``data.csv`` with the images beside it or in one sub-folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, cast

from .base import MOSDataModule
from .readers import Reader
from .records import (
    MissingFile,
    Record,
    column,
    find_image_folder,
    generator_of,
    parse_names,
    parse_stds,
    parse_targets,
    read_csv_rows,
    require_unique,
    table,
)

TARGET_COLUMNS = {"quality": "mos_quality", "align": "mos_align"}
STD_COLUMNS = {"quality": "std_quality", "align": "std_align"}  # the raters' spread (read when present)
Target = Literal["quality", "align"]
LAYOUT = "AGIQA-3K as downloaded: data.csv (name,prompt,...,mos_quality,...,mos_align,...) and the images beside it"


class AGIQA3KReader(Reader):
    """``data.csv`` (name, prompt, mos_quality, mos_align, ...) and the images beside it or in one sub-folder."""

    name = "AGIQA3K"
    targets = tuple(TARGET_COLUMNS)
    mos_scale = (0.0, 5.0)
    annotation_file = "data.csv"

    def read(self, root: Path) -> list[Record]:
        path = root / self.annotation_file
        if not path.is_file():
            raise MissingFile(f"{path} not found: expected {LAYOUT}")
        rows = table(read_csv_rows(path), ["name", "prompt", *TARGET_COLUMNS.values()], str(path))
        names = parse_names(column(rows, "name"), str(path), "name")
        require_unique(names, str(path), [number for number, _ in rows])
        by_column = parse_targets(rows, list(TARGET_COLUMNS.values()), str(path))
        stds = parse_stds(rows, STD_COLUMNS, str(path))
        folder = find_image_folder(root, names, LAYOUT)
        records = []
        for index, (name, (number, row)) in enumerate(zip(names, rows)):
            values = {key: by_column[file_column][index] for key, file_column in TARGET_COLUMNS.items()}
            records.append(Record(name, folder / name, values, prompt=(row["prompt"] or "").strip(),
                                  generator=generator_of(name), where=f"{path}, row {number}",
                                  stds={key: spread[index] for key, spread in stds.items()}))
        return records


class AGIQA3K(MOSDataModule):
    """AGIQA-3K.

    Args:
        target: ``quality`` (mos_quality, the paper's table) or ``align`` (mos_align, text-image alignment), or
            both as a list (``[quality, align]``: one model, one output each).
        (the rest: see ``MOSDataModule``)
    """

    def __init__(self, root: str, target: Target | list[Target] = "quality", **kwargs):
        # a list of Target is a list of str (mypy's list is invariant)
        super().__init__(root, reader=AGIQA3KReader(), target=cast("str | list[str]", target), **kwargs)

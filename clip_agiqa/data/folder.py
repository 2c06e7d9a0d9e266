"""Your own images: a folder with ``metadata.csv`` (``file_name,mos[,prompt]``), or a bare folder to score."""

from __future__ import annotations

import csv

from .base import MOSDataModule
from .records import Record, list_images, parse_mos, require_columns
from .splits import SPLITS


class MOSFolder(MOSDataModule):
    """A folder of images and a CSV of their MOS.

    Args:
        metadata: the CSV inside ``root`` (columns ``file_name``, the target column, optional ``prompt``).
        target: the column that holds the MOS.
        (the rest: see ``MOSDataModule``)
    """

    def __init__(self, root: str, metadata: str = "metadata.csv", target: str = "mos", **kwargs):
        super().__init__(root, **kwargs)
        self.metadata = metadata
        self.target = target

    def load_records(self) -> list[Record]:
        path = self.root / self.metadata
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: MOSFolder expects a {self.metadata} "
                                    f"with columns file_name,{self.target}[,prompt] inside {self.root}")
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            require_columns(reader.fieldnames or [], ["file_name", self.target], str(path))
            records = []
            for row_number, row in enumerate(reader, start=2):  # row 1 is the header
                name = (row["file_name"] or "").strip()
                if not name:
                    raise ValueError(f"{path}, row {row_number}: empty file_name")
                mos = parse_mos(row[self.target], str(path), row_number, self.target)
                records.append(Record(name, self.root / name, mos, prompt=row.get("prompt") or None))
        if not records:
            raise ValueError(f"{path}: no rows")
        return records


class ImageFolder(MOSDataModule):
    """Every image under ``root`` (recursively), unlabelled: for ``clip-agiqa predict`` on a folder."""

    def __init__(self, root: str, **kwargs):
        kwargs.setdefault("predict_split", "all")
        super().__init__(root, **kwargs)

    def load_records(self) -> list[Record]:
        if not self.root.is_dir():
            raise FileNotFoundError(f"image folder {self.root} not found")
        return [Record(str(p.relative_to(self.root)), p, float("nan")) for p in list_images(self.root)]

    def assign_splits(self, records: list[Record]) -> list[str]:
        return ["test"] * len(records)

    def make_dataset(self, split: str):
        if split not in ("all", "test"):
            raise ValueError(f"ImageFolder has no MOS: it can only be scored (predict), not used for {split}")
        return super().make_dataset(split)


__all__ = ["MOSFolder", "ImageFolder", "SPLITS"]

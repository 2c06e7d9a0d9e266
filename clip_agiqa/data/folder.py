"""Your own images: a folder with ``metadata.csv`` (``file_name,mos[,prompt]``, or several numeric target
columns), or a bare folder to score."""

from __future__ import annotations

from .base import MOSDataModule
from .records import (Record, column, list_images, parse_names, parse_targets, read_csv_rows, require_unique,
                      selected_targets, table)
from .splits import SPLITS


class MOSFolder(MOSDataModule):
    """A folder of images and a CSV of their MOS.

    Args:
        metadata: the CSV inside ``root`` (columns ``file_name``, the target column(s), optional ``prompt``).
        target: the column that holds the MOS, or a list of numeric columns (one model, one output each).
        (the rest: see ``MOSDataModule``)
    """

    def __init__(self, root: str, metadata: str = "metadata.csv", target: str | list[str] = "mos", **kwargs):
        super().__init__(root, **kwargs)
        selected_targets(target, None, "MOSFolder")
        self.metadata = metadata
        self.target = target

    def load_records(self) -> list[Record]:
        path = self.root / self.metadata
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: MOSFolder expects a {self.metadata} "
                                    f"with columns file_name,{','.join(self.targets)}[,prompt] inside {self.root}")
        rows = table(read_csv_rows(path), ["file_name", *self.targets], str(path))
        names = parse_names(column(rows, "file_name"), str(path), "file_name")
        require_unique(names, str(path), [number for number, _ in rows])
        targets = parse_targets(rows, self.targets, str(path))
        first = targets[self.targets[0]]
        return [Record(name, self.root / name, first[index], prompt=row.get("prompt") or None,
                       targets={column_name: values[index] for column_name, values in targets.items()})
                for index, (name, (_, row)) in enumerate(zip(names, rows))]


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

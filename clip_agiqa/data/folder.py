"""Your own images: a folder with ``metadata.csv`` (``file_name,mos[,prompt]``, or several numeric target
columns), or a bare folder to score."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .base import MOSDataModule
from .images import scan_folder, warn_skipped
from .readers import Reader
from .records import (
    MissingFile,
    Record,
    column,
    parse_names,
    parse_stds,
    parse_targets,
    read_csv_rows,
    require_unique,
    selected_targets,
    table,
)
from .splits import SPLITS


class MOSFolderReader(Reader):
    """``metadata`` inside the root: ``file_name``, the ``columns`` holding targets, optional ``prompt``.

    Names are relative to the root; one that resolves outside it is refused by the datamodule (see
    ``allow_outside_root``)."""

    name = "MOSFolder"
    mos_scale = None  # measured on the training split

    def __init__(self, metadata: str = "metadata.csv", columns: list[str] | tuple[str, ...] = ("mos",)):
        super().__init__()
        self.metadata = metadata
        self.targets = tuple(columns)

    def __repr__(self) -> str:
        return f"MOSFolderReader(metadata={self.metadata!r}, columns={list(self.targets)!r})"

    def read(self, root: Path) -> list[Record]:
        path = root / self.metadata
        columns = list(self.targets)
        if not path.is_file():
            raise MissingFile(f"{path} not found: {self.name} expects a {self.metadata} "
                              f"with columns file_name,{','.join(columns)}[,prompt] inside {root}")
        rows = table(read_csv_rows(path), ["file_name", *columns], str(path))
        names = parse_names(column(rows, "file_name"), str(path), "file_name")
        require_unique(names, str(path), [number for number, _ in rows])
        targets = parse_targets(rows, columns, str(path))
        stds = parse_stds(rows, {name: f"{name}_std" for name in columns}, str(path))  # optional columns
        return [Record(name, root / name, {name_: values[index] for name_, values in targets.items()},
                       prompt=row.get("prompt") or None,
                       where=f"{path}, row {number}", stds={name_: values[index] for name_, values in stds.items()})
                for index, (name, (number, row)) in enumerate(zip(names, rows))]


class ImageFolderReader(Reader):
    """Every image under the root (recursively), unlabelled."""

    name = "ImageFolder"
    targets = None

    def read(self, root: Path) -> list[Record]:
        if not root.is_dir():
            raise MissingFile(f"image folder {root} not found")
        found, skipped = scan_folder(root)  # every format the loader reads, sorted
        warn_skipped(root, skipped)  # one warning names what the scan left out
        return [Record(str(p.relative_to(root)), p) for p in found]


class MOSFolder(MOSDataModule):
    """A folder of images and a CSV of their MOS.

    Args:
        metadata: the CSV inside ``root`` (columns ``file_name``, the target column(s), optional ``prompt``).
        target: the column that holds the MOS, or a list of numeric columns (one model, one output each).
        (the rest: see ``MOSDataModule``)
    """

    reader: MOSFolderReader  # the one __init__ hands to MOSDataModule (or a subclass's)

    def __init__(self, root: str, metadata: str = "metadata.csv", target: str | list[str] = "mos", **kwargs):
        reader = MOSFolderReader(metadata, selected_targets(target, None, "MOSFolder"))
        super().__init__(root, reader=reader, target=target, **kwargs)
        self.metadata = metadata


class ImageFolder(MOSDataModule):
    """Every image under ``root`` (recursively), unlabelled: for ``clip-agiqa predict`` on a folder."""

    def __init__(self, root: str, **kwargs):
        kwargs.setdefault("predict_split", "all")
        super().__init__(root, reader=ImageFolderReader(), **kwargs)

    def assign_splits(self, records: list[Record]) -> list[str]:
        return ["test"] * len(records)

    def make_dataset(self, split: str):
        if split not in ("all", "test"):
            raise InputError(f"ImageFolder has no MOS: it can only be scored (predict), not used for {split}")
        return super().make_dataset(split)


__all__ = ["MOSFolder", "MOSFolderReader", "ImageFolder", "ImageFolderReader", "SPLITS"]

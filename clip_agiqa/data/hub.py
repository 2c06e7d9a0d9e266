"""HFDataset: any Hugging Face ``datasets`` dataset with an image column and a MOS column.

``path`` is a hub id or a local folder (``imagefolder`` with ``metadata.csv``, parquet files, or a folder
written by ``save_to_disk``). Samples are named by ``file_name_column`` when given, otherwise by their
image path (relative to a local folder), otherwise (map-style only) by their row number; that name is
what ``splits.csv`` and a predefined splits file use.

With ``streaming: true`` nothing is downloaded up front: one pass over the stream reads the names, MOS and
prompts, so every split protocol gives exactly the split it gives a map-style copy; images are then decoded
on the fly in the DataLoader workers. That pass selects only those columns before iterating: with a
``file_name_column`` it never reads the image column (no image is downloaded); without one the image column
is read undecoded for its paths. Under DDP each rank
reads its own part (``datasets.distributed.split_dataset_by_node``): val/test see every sample exactly
once over all ranks, so metrics stay exact. Training reshuffles every epoch (``set_epoch``) and every
rank runs the same number of steps (a rank whose part runs short starts its part again), as DDP needs.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Iterator

import torch
from PIL import Image
from torch.utils.data import DataLoader

from ..errors import InputError
from .base import ImageDataset, MOSDataModule
from .images import load_rgb, to_rgb
from .readers import Reader
from .records import Record, parse_targets, require_columns, require_unique, selected_targets, target_tensor
from .transforms import ImageTransform


def decode_image(value, name: str) -> Image.Image:
    """An undecoded ``datasets`` image (``{"bytes", "path"}``) as RGB the way image files are read (``to_rgb``:
    EXIF orientation, 16-bit, transparency), or an error naming the sample."""
    if isinstance(value, Image.Image):
        return to_rgb(value)
    if not isinstance(value, dict) or (value.get("bytes") is None and not value.get("path")):
        raise InputError(f"sample {name}: the image column holds no image ({type(value).__name__})")
    if value.get("bytes") is None:
        return load_rgb(value["path"])
    return load_rgb(io.BytesIO(value["bytes"]), name=f"of sample {name}")  # the limits and formats of files


class HubImageDataset(ImageDataset):
    """Map-style: the records' images come from rows of a ``datasets.Dataset``."""

    def __init__(self, records: list[Record], transform: ImageTransform, targets: list[str], table,
                 image_column: str, rows: dict[str, int]):
        super().__init__(records, transform, targets)
        self.table, self.image_column, self.rows = table, image_column, rows

    def load_image(self, index: int) -> Image.Image:
        name = self.records[index].file_name
        return decode_image(self.table[self.rows[name]][self.image_column], name)


class EpochStream:
    """The training loader of a stream: exactly ``steps`` batches per epoch on every rank, reshuffled each
    epoch; a rank whose part ends early starts it again (with the next shuffle) to keep DDP in step."""

    def __init__(self, loader: DataLoader, stream, steps: int, epoch_of):
        self.loader, self.stream, self.steps, self.epoch_of = loader, stream, steps, epoch_of

    def __len__(self) -> int:
        return self.steps

    def __iter__(self):
        produced, restart = 0, 0
        while produced < self.steps:
            self.stream.set_epoch(self.epoch_of() * 1000 + restart)
            empty = True
            for batch in self.loader:
                empty = False
                yield batch
                produced += 1
                if produced == self.steps:
                    return
            if empty:
                raise InputError("the training stream of this rank yielded nothing; use fewer processes or "
                                   "a dataset with more shards")
            restart += 1


class HubReader(Reader):
    """The metadata pass of a ``datasets`` dataset: names, targets and prompts, never a decoded image.

    Map-style, it keeps the table (``table``) and each sample's row (``rows``) for the image loader. Args: see
    ``HFDataset``.
    """

    name = "HFDataset"
    mos_scale = None  # whatever the dataset's target columns hold

    def __init__(self, path: str, name: str | None = None, hf_split: str = "train", image_column: str = "image",
                 target_columns: list[str] | tuple[str, ...] = ("mos",), prompt_column: str | None = "prompt",
                 file_name_column: str | None = None, streaming: bool = False, hf_cache_dir: str | None = None):
        super().__init__()
        self.path, self.config_name, self.hf_split = path, name, hf_split
        self.image_column, self.targets = image_column, tuple(target_columns)
        self.prompt_column, self.file_name_column = prompt_column, file_name_column
        self.streaming, self.hf_cache_dir = streaming, hf_cache_dir
        self.table = None
        self.rows: dict[str, int] = {}
        self.root: Path = Path(path).expanduser()

    def __repr__(self) -> str:
        return f"HubReader(path={self.path!r}, hf_split={self.hf_split!r}, streaming={self.streaming})"

    @property
    def source(self) -> str:
        return f"dataset {self.path} ({self.hf_split})"

    def open(self, streaming: bool):
        """The ``datasets`` dataset with the columns used (images left undecoded: we decode them, with clear
        errors)."""
        import datasets

        local = Path(self.path).expanduser()
        if (local / "state.json").is_file() or (local / "dataset_dict.json").is_file():
            loaded = datasets.load_from_disk(str(local))
            if isinstance(loaded, datasets.DatasetDict):
                if self.hf_split not in loaded:
                    raise InputError(f"{local}: no split {self.hf_split!r}; it has {', '.join(loaded)}")
                loaded = loaded[self.hf_split]
            dataset = loaded.to_iterable_dataset(num_shards=max(1, loaded.num_rows // 1000)) if streaming else loaded
        else:
            dataset = datasets.load_dataset(str(local) if local.exists() else self.path, self.config_name,
                                            split=self.hf_split, streaming=streaming, cache_dir=self.hf_cache_dir)
        columns = list(dataset.column_names or dataset.features or [])
        wanted = [self.image_column, *self.targets, self.file_name_column,
                  self.prompt_column if self.prompt_column in columns else None]
        require_columns(columns, [c for c in wanted if c], self.source)
        return dataset.select_columns([c for c in wanted if c]).cast_column(self.image_column,
                                                                           datasets.Image(decode=False))

    def metadata_columns(self, dataset) -> list[str]:
        """The columns the metadata pass reads: the image column (for its paths) only without a name column."""
        return [c for c in dataset.column_names if c != self.image_column or not self.file_name_column]

    def sample_name(self, example: dict, row: int | None) -> str:
        if self.file_name_column:
            return str(example[self.file_name_column])
        path = (example.get(self.image_column) or {}).get("path")
        if path:
            try:
                return str(Path(path).resolve().relative_to(self.root.resolve()))
            except (ValueError, OSError):
                return str(path)
        if row is None:
            raise InputError(f"a streamed sample of {self.path} has no image path: give file_name_column, a column "
                             "that names each sample, so that the split can be drawn")
        return f"{row:08d}"

    def read(self, root: Path | None = None) -> list[Record]:
        dataset = self.open(self.streaming)
        records, self.rows = [], {}
        examples: Iterator[tuple[int | None, dict]]  # (row, example): no row number in a stream
        if self.streaming:
            # Names, targets and prompts only: selected before iterating, so no image is fetched for them.
            examples = ((None, ex) for ex in dataset.select_columns(self.metadata_columns(dataset)))
        else:
            self.table = dataset
            # Names, MOS and prompts only: the image column is read as paths, never decoded.
            meta = dataset.select_columns([c for c in dataset.column_names if c != self.image_column]).to_list()
            paths = dataset.data.column(self.image_column).combine_chunks().field("path").to_pylist()
            examples = ((row, {**m, self.image_column: {"path": p}}) for row, (m, p) in enumerate(zip(meta, paths)))
        values = []  # (row, {target: MOS}): every bad one is named at once
        for position, (row, example) in enumerate(examples):
            name = self.sample_name(example, row)
            values.append((position, {target: example[target] for target in self.targets}))
            prompt = example.get(self.prompt_column) if self.prompt_column else None
            records.append(Record(name, Path(name), prompt=str(prompt) if prompt else None,
                                  where=f"{self.source}, row {position}"))
            self.rows[name] = position
        require_unique([r.file_name for r in records], self.source, [position for position, _ in values])
        targets = parse_targets(values, list(self.targets), self.source)
        for index, record in enumerate(records):
            record.targets = {target: mos[index] for target, mos in targets.items()}
        return records


class HFDataset(MOSDataModule):
    """A Hugging Face ``datasets`` dataset.

    Args:
        path: hub id or local folder (``root`` is accepted as the same thing).
        name: the dataset configuration (hub datasets with several).
        hf_split: which split of the ``datasets`` dataset to read; the split protocol divides it.
        image_column: the image column.
        target_column: the MOS column, or a list of numeric columns (one model, one output each).
        prompt_column: the generation prompt column, if any (needed for ``split: prompt`` and a model that
            reads prompts, ``use_prompt``).
        file_name_column: a column that names each sample (default: the image path). With streaming, it lets
            the metadata pass skip the image column entirely.
        streaming: read the dataset as a stream (``IterableDataset``) instead of downloading it.
        shuffle_buffer: examples held by the streaming shuffle.
        hf_cache_dir: the ``datasets`` cache folder (default: the ``datasets`` default).
        (the rest: see ``MOSDataModule``)
    """

    reader: HubReader  # the one __init__ hands to MOSDataModule

    def __init__(self, path: str | None = None, root: str | None = None, name: str | None = None,
                 hf_split: str = "train", image_column: str = "image", target_column: str | list[str] = "mos",
                 prompt_column: str | None = "prompt", file_name_column: str | None = None,
                 streaming: bool = False, shuffle_buffer: int = 1000, hf_cache_dir: str | None = None, **kwargs):
        if (path or root) is None:
            raise InputError("HFDataset needs path (a hub id or a local dataset folder)")
        if path and root and path != root:
            raise InputError(f"HFDataset: give path or root, not both ({path!r}, {root!r})")
        columns = selected_targets(target_column, None, "HFDataset")
        reader = HubReader(path or root, name, hf_split, image_column, columns, prompt_column, file_name_column,
                           streaming, hf_cache_dir)
        super().__init__(path or root, reader=reader, target=target_column, **kwargs)
        if self.skip_bad_images:
            raise InputError("skip_bad_images needs image files to scan; HFDataset reports a bad image by its "
                             "sample name instead")
        if self.cache_views:
            raise InputError("cache_views is not supported by HFDataset yet (its samples have no image file to key "
                             "the cache on); leave it at 0")
        self.path = path or root
        self.name, self.hf_split = name, hf_split
        self.image_column, self.target_column = image_column, target_column
        self.prompt_column, self.file_name_column = prompt_column, file_name_column
        self.streaming, self.shuffle_buffer, self.hf_cache_dir = streaming, shuffle_buffer, hf_cache_dir

    # --- reading -----------------------------------------------------------------------------------
    @property
    def table(self):
        return self.reader.table

    @property
    def rows(self) -> dict[str, int]:
        return self.reader.rows

    def open(self, streaming: bool):
        return self.reader.open(streaming)

    def sample_name(self, example: dict, row: int | None) -> str:
        return self.reader.sample_name(example, row)

    def validate_records(self, records: list[Record]) -> list[Record]:
        if not records:
            raise InputError(f"{self.reader.source}: no samples")
        return records

    def check_images(self) -> None:
        self.load()  # images are checked by sample as they are decoded: there are no files to pre-check

    # --- datasets and loaders ----------------------------------------------------------------------
    def make_dataset(self, split: str):
        if self.streaming:
            raise RuntimeError("a streamed HFDataset has no map-style dataset; use its dataloaders")
        records = self.split_records(split)
        if not records:
            raise InputError(f"dataset {self.path}: the {split} split is empty; change test_size/val_size")
        if self.read_prompts:
            self.generation_prompts()
        transform = ImageTransform(self.image_settings(), train=split == "train", crop_scale=self.crop_scale,
                                   augment=self.augment)
        return HubImageDataset(records, transform, self.targets, self.table, self.image_column, self.rows)

    def stream(self, split: str, train: bool):
        """The split's examples as items (``image``, ``mos``, ``prompt``, ``index``, ``file_name``, ``error``, as
        ``ImageDataset`` gives them), this rank's part only."""
        from datasets.distributed import split_dataset_by_node

        records = self.split_records(split)
        if not records:
            raise InputError(f"dataset {self.path}: the {split} split is empty; change test_size/val_size")
        if self.read_prompts:
            self.generation_prompts()
        index = {r.file_name: (i, r) for i, r in enumerate(records)}
        transform = ImageTransform(self.image_settings(), train=train, crop_scale=self.crop_scale,
                                   augment=self.augment)
        stream = self.open(streaming=True)
        if train:  # the same seed on every rank, so the ranks' parts stay disjoint after shuffling
            stream = stream.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
        rank, world_size = self.world()
        if world_size > 1:
            stream = split_dataset_by_node(stream, rank=rank, world_size=world_size)

        def to_item(example: dict) -> dict:
            name = self.sample_name(example, None)
            position, record = index[name]
            return {"image": transform(decode_image(example[self.image_column], name)),
                    "mos": target_tensor(record, self.targets), "prompt": record.prompt or "", "index": position,
                    "file_name": name, "error": ""}

        stream = stream.filter(lambda example: self.sample_name(example, None) in index)
        return stream.map(to_item, remove_columns=list(stream.column_names or [])), len(records)

    def _stream_loader(self, split: str, train: bool):
        stream, count = self.stream(split, train)
        batch_size = self.batch_size if train else self.eval_batch_size
        loader = DataLoader(stream, batch_size=batch_size, num_workers=self.num_workers,
                            persistent_workers=self.num_workers > 0, pin_memory=torch.cuda.is_available())
        if not train:
            return loader
        steps = math.ceil(count / (self.world()[1] * batch_size))
        return EpochStream(loader, stream, steps, lambda: self.trainer.current_epoch if self.trainer else 0)

    def train_dataloader(self):
        return self._stream_loader("train", True) if self.streaming else super().train_dataloader()

    def val_dataloader(self):
        return self._stream_loader("val", False) if self.streaming else super().val_dataloader()

    def test_dataloader(self):
        return self._stream_loader("test", False) if self.streaming else super().test_dataloader()

    def predict_dataloader(self):
        return self._stream_loader(self.predict_split, False) if self.streaming else super().predict_dataloader()

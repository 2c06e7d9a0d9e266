"""Feature cache for the frozen image encoder: each image is encoded once per view, then reused.

The encoders never train, so encoding every image again every epoch is wasted work. Training keeps
its augmentation by caching ``K`` random views per image (random resized crop + flip) and drawing one
per epoch; val/test/predict use the single centre view.

On disk: one safetensors file per image and transform, under
``<cache_dir>/<backbone>-<encoder hash>/<transform hash>/<path hash>.safetensors``, holding
``features`` (views, dim) and, in its metadata, the full key (backbone, weights fingerprint, encoder
dtype, precision and attention kernel, transform settings, the image's path, size and mtime) and a
SHA-256 of the values. An entry whose key differs (the image or a setting changed), which does not parse (truncated)
or whose checksum fails (corrupt) is rebuilt, never used. Files are written to a temporary name and
renamed, so a killed run leaves no half-written entry behind.

View ``v`` of an image is drawn with a generator seeded from the image's file name and ``v`` only, so
a cache with more views extends one with fewer, and ``view_generator`` reproduces any cached view.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .data.records import Record, target_tensor
from .data.images import load_rgb
from .data.transforms import ImageTransform

CACHE_FORMAT = "1"  # the layout of an entry; the settings that change features are keyed themselves
DEFAULT_CACHE_DIRNAME = ".feature_cache"


# --- keys ------------------------------------------------------------------------------------------
def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def file_identity(path: Path) -> dict:
    """What identifies an image file's content cheaply: resolved path, size and modification time."""
    stat = os.stat(path)
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def view_seed(file_name: str, view: int) -> int:
    return int(_sha256(f"{file_name}\0{view}")[:15], 16)


def view_generator(file_name: str, view: int) -> torch.Generator:
    """The generator that draws training view ``view`` of an image: the same view on every run."""
    return torch.Generator().manual_seed(view_seed(file_name, view))


@dataclass(frozen=True)
class Encoder:
    """Everything about the encoder that changes the features: every field is part of the key."""

    backbone: str
    fingerprint: str
    dtype: str = "float32"
    precision: str = "32-true"
    attn_implementation: str = "sdpa"  # sdpa and eager kernels round differently

    def describe(self) -> dict:
        return asdict(self)

    def folder_name(self) -> str:
        """The backbone's name (readable) and a hash of every field (one folder per encoder setting)."""
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", self.backbone).strip("_")
        return f"{name}-{_sha256(json.dumps(self.describe(), sort_keys=True))[:16]}"


def entry_key(encoder: Encoder, transform: ImageTransform, record: Record) -> dict:
    """The full key of one image's cached views (the view index is the row of the stored tensor)."""
    return {"format": CACHE_FORMAT, "encoder": encoder.describe(), "transform": transform.describe(),
            "file_name": record.file_name, "file": file_identity(record.path)}


def transform_hash(transform: ImageTransform) -> str:
    return _sha256(json.dumps(transform.describe(), sort_keys=True))[:16]


# --- entries on disk -------------------------------------------------------------------------------
def _checksum(features: torch.Tensor) -> str:
    return hashlib.sha256(features.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()


def read_entry(path: Path, key: dict) -> torch.Tensor | None:
    """The cached views (views, dim) if the entry exists, is intact and has exactly this key; else None."""
    if not path.is_file():
        return None
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            features = handle.get_tensor("features")
    except Exception:  # truncated or not a safetensors file at all: rebuilt by the caller
        return None
    if metadata.get("key") != json.dumps(key, sort_keys=True) or features.dim() != 2:
        return None
    if metadata.get("sha256") != _checksum(features):
        return None
    return features


def write_entry(path: Path, key: dict, features: torch.Tensor) -> None:
    """Write atomically (temporary file + rename): readers never see a half-written entry."""
    path.parent.mkdir(parents=True, exist_ok=True)
    features = features.detach().to("cpu").contiguous()
    metadata = {"key": json.dumps(key, sort_keys=True), "sha256": _checksum(features)}
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    save_file({"features": features}, str(temporary), metadata=metadata)
    os.replace(temporary, path)


# --- building --------------------------------------------------------------------------------------
@dataclass
class _Todo:
    """An image whose entry must be (re)built: the views it already has and those it still needs."""

    index: int
    key: dict
    path: Path
    existing: torch.Tensor | None
    views: list[int] = field(default_factory=list)


class _ViewPixels(Dataset):
    """Decodes and transforms the missing views of each image, in DataLoader workers."""

    def __init__(self, todo: list[_Todo], records: Sequence[Record], transform: ImageTransform):
        self.todo = todo
        self.records = records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, item: int) -> tuple[int, torch.Tensor]:
        entry = self.todo[item]
        record = self.records[entry.index]
        image = load_rgb(record.path)
        if not self.transform.train:
            return item, self.transform(image).unsqueeze(0)
        pixels = [self.transform(image, generator=view_generator(record.file_name, v)) for v in entry.views]
        return item, torch.stack(pixels)


def _collate(batch: list[tuple[int, torch.Tensor]]) -> tuple[list[int], list[int], torch.Tensor]:
    items = [item for item, _ in batch]
    counts = [pixels.shape[0] for _, pixels in batch]
    return items, counts, torch.cat([pixels for _, pixels in batch])


class FeatureCache:
    """Builds and reads cached image features.

    Args:
        directory: the cache folder.
        encoder: what identifies the encoder (part of every key).
        encode: normalised pixels (batch, 3, size, size) -> features (batch, dim); called without grad.
        device: where ``encode`` runs (pixels are moved there).
        batch_size: images per encoder call while building.
        num_workers: DataLoader workers that decode and transform images while building.
        forward_context: wraps each ``encode`` call (the trainer's precision, e.g. bf16 autocast).
        rank, world_size, barrier: under DDP each rank builds the entries ``rank::world_size`` of a
            split, then all wait at ``barrier`` and read every entry.
        progress: show a progress bar while building (rank 0 only).
    """

    def __init__(self, directory: str | Path, encoder: Encoder, encode: Callable[[torch.Tensor], torch.Tensor],
                 device: torch.device | str = "cpu", batch_size: int = 32, num_workers: int = 0,
                 forward_context: Callable = nullcontext, rank: int = 0, world_size: int = 1,
                 barrier: Callable[[], None] = lambda: None, progress: bool = True):
        self.directory = Path(directory).expanduser()
        self.encoder = encoder
        self.encode = encode
        self.device = torch.device(device)
        self.batch_size = max(1, batch_size)
        self.num_workers = num_workers
        self.forward_context = forward_context
        self.rank = rank
        self.world_size = world_size
        self.barrier = barrier
        self.progress = progress
        self.built_views = 0  # views encoded by this process (what tests and the benchmark count)

    def entry_path(self, transform: ImageTransform, record: Record) -> Path:
        name = _sha256(str(Path(record.path).resolve()))[:32]
        return self.directory / self.encoder.folder_name() / transform_hash(transform) / f"{name}.safetensors"

    def features(self, records: Sequence[Record], transform: ImageTransform, views: int = 1) -> torch.Tensor:
        """Features of every record, (n_records, views, dim): this rank builds its missing share, then
        every rank reads them all."""
        views = views if transform.train else 1
        if views < 1:
            raise ValueError(f"views must be at least 1, got {views}")
        self.build(records, transform, views, share=range(self.rank, len(records), self.world_size))
        self.barrier()
        loaded = self._read_all(records, transform)
        bad = [i for i, f in enumerate(loaded) if f is None or f.shape[0] < views]
        if bad:  # another rank failed to write, or an entry went bad since: rebuild here, never use it
            self._build_entries(self._missing(records, transform, views, bad), records, transform)
            loaded = self._read_all(records, transform)
        if any(f is None or f.shape[0] < views for f in loaded):
            raise RuntimeError(f"feature cache {self.directory}: entries vanished while reading; is another "
                               "run writing the same cache with different settings?")
        return torch.stack([f[:views] for f in loaded])

    def _read_all(self, records: Sequence[Record], transform: ImageTransform) -> list[torch.Tensor | None]:
        return [read_entry(self.entry_path(transform, r), entry_key(self.encoder, transform, r)) for r in records]

    def build(self, records: Sequence[Record], transform: ImageTransform, views: int,
              share: Sequence[int] | None = None) -> int:
        """Build the missing or invalid entries among ``share`` (default: all); returns how many."""
        share = range(len(records)) if share is None else share
        todo = self._missing(records, transform, views if transform.train else 1, share)
        self._build_entries(todo, records, transform)
        return len(todo)

    def _missing(self, records: Sequence[Record], transform: ImageTransform, views: int,
                 indices: Sequence[int]) -> list[_Todo]:
        todo = []
        for index in indices:
            record = records[index]
            key = entry_key(self.encoder, transform, record)
            path = self.entry_path(transform, record)
            existing = read_entry(path, key)
            have = 0 if existing is None else existing.shape[0]
            if have < views:
                todo.append(_Todo(index, key, path, existing, list(range(have, views))))
        return todo

    @torch.no_grad()
    def _build_entries(self, todo: list[_Todo], records: Sequence[Record], transform: ImageTransform) -> None:
        if not todo:
            return
        views_per_image = max(len(t.views) for t in todo)
        loader = DataLoader(_ViewPixels(todo, records, transform), batch_size=max(1, self.batch_size // views_per_image),
                            num_workers=self.num_workers, collate_fn=_collate,
                            pin_memory=self.device.type == "cuda")
        description = f"caching {'train' if transform.train else 'eval'} features ({views_per_image} view(s))"
        # A DataLoader draws its seed from the global RNG: fork it, so a run trains the same whether
        # or not it had to build the cache first.
        show = self.progress and self.rank == 0
        with torch.random.fork_rng(devices=[]), tqdm(total=len(todo), desc=description, unit="img",
                                                     disable=not show, leave=False) as bar:
            for items, counts, pixels in loader:
                with self.forward_context():
                    features = self.encode(pixels.to(self.device, non_blocking=True))
                for item, chunk in zip(items, features.split(counts)):
                    entry = todo[item]
                    chunk = chunk.to("cpu")
                    if entry.existing is not None:
                        chunk = torch.cat([entry.existing.to(chunk.dtype), chunk])
                    write_entry(entry.path, entry.key, chunk)
                self.built_views += pixels.shape[0]
                bar.update(len(items))


# --- the dataset training and evaluation read ------------------------------------------------------
class CachedFeatures(Dataset):
    """Cached features in memory: ``features`` (one view, drawn at random per access when there are
    several), ``mos`` (as ``ImageDataset`` gives it: a scalar for one target, one value per target for several),
    ``prompt``, ``index``, ``file_name`` and ``error`` - the batch ``CLIPAGIQA`` reads instead of ``image``."""

    in_memory = True  # nothing to decode: loaders need no workers

    def __init__(self, records: Sequence[Record], features: torch.Tensor, targets: list[str] | None = None):

        if features.dim() != 3 or features.shape[0] != len(records):
            raise ValueError(f"expected features (n_records={len(records)}, views, dim), got {tuple(features.shape)}")
        self.records = list(records)
        self.features = features
        self.mos = [target_tensor(r, targets) for r in self.records]

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        views = self.features.shape[1]
        view = int(torch.randint(views, ())) if views > 1 else 0
        record = self.records[index]
        return {"features": self.features[index, view], "mos": self.mos[index], "prompt": record.prompt or "",
                "index": index, "file_name": record.file_name, "error": ""}


# --- wiring to a Trainer ---------------------------------------------------------------------------
def default_cache_dir(data_root: Path, trainer=None) -> Path:
    """``<data root>/.feature_cache`` (shared by every run on that data), or the run folder's
    ``feature_cache`` when the data folder is read-only."""
    data_root = Path(data_root).expanduser()
    if os.access(data_root, os.W_OK):
        return data_root / DEFAULT_CACHE_DIRNAME
    run_root = Path(trainer.default_root_dir) if trainer is not None else Path.cwd()
    return run_root / "feature_cache"


def cache_for_trainer(trainer, model, directory: str | Path | None, data_root: Path, batch_size: int,
                      num_workers: int) -> FeatureCache:
    """A cache that encodes with ``model`` (a ``CLIPAGIQAModel``) on its device, under the trainer's precision,
    sharded by rank."""
    if model is None or trainer is None:
        raise RuntimeError("cache_views > 0 needs the model handed to the datamodule by a Trainer "
                           "(fit/validate/test/predict) to encode the images; set cache_views: 0 to use the "
                           "datamodule on its own")
    clip_dtype = str(model.clip.visual_projection.weight.dtype).removeprefix("torch.")
    encoder = Encoder(model.arguments["backbone"], model.backbone_fingerprint, clip_dtype, str(trainer.precision),
                      model.arguments["attn_implementation"])
    return FeatureCache(
        directory or default_cache_dir(data_root, trainer), encoder, model.encode_images,
        device=model.mos_scale.device, batch_size=batch_size, num_workers=num_workers,
        forward_context=trainer.precision_plugin.forward_context, rank=trainer.global_rank,
        world_size=trainer.world_size, barrier=lambda: trainer.strategy.barrier("feature_cache"),
        progress=trainer.progress_bar_callback is not None,
    )

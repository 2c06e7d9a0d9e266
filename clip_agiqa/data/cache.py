"""Feature cache for the frozen encoders: each image is encoded once per view, each generation prompt once; then
reused by every run, memory-mapped.

The encoders never train, so encoding every image again every epoch is wasted work. Training keeps its
augmentation by caching ``K`` random views per image (random resized crop + flip) and drawing one per step; val,
test and predict use the single centre view.

On disk, under ``<cache_dir>/<backbone>-<encoder key hash>/``:

- ``<transform hash>/shard-<hash>.npy`` + ``.json``: the features of up to ``SHARD_ROWS`` consecutive records of a
  split, one ``(rows, K, dim)`` array file (numpy ``.npy``, read memory-mapped), and its manifest: the key (encoder:
  backbone, weights fingerprint, dtype, precision, attention kernel; transform settings), one
  ``[file_name, path, size, mtime_ns]`` per row, the dtype, the shape and the SHA-256 of the array file. The shard's
  name hashes its rows' names and paths, so the same split finds its shards again.
- ``prompts/prompts-<hash>.npy`` + ``.json``: the frozen text features of the data's distinct generation prompts.

What holds: never stale (a row whose image changed size or mtime is encoded again), never corrupt (a shard whose
manifest does not parse, whose key differs or whose array fails its checksum is rebuilt, never used; the checksum is
verified once when a loader opens the shard), never trusted (the cache may sit in a shared data folder, so anyone
may have planted it: only regular files are opened, never a FIFO or device, so nothing can block or read forever;
the array's size must be the one its manifest describes, its feature size the encoder's, and its features finite
and not all zero; a bad file is named in one warning and rebuilt), resumable (each shard is written atomically,
array then manifest, and finished shards stay when a run is killed), and the same features as encoding each time.
A shard that lacks rows or views reuses what it has and what other shards of the same transform hold, and encodes
only the rest.

Under DDP rank ``r`` builds the shards ``r::world_size`` of a split (rank 0 the prompt table), all wait at a barrier,
then every rank maps every shard: rows are paged in when a batch reads them, so no rank holds the split in its own
memory and the ranks of one machine share the pages.

View ``v`` of an image is drawn with a generator seeded from the image's file name and ``v`` only, so a cache with
more views extends one with fewer, and ``view_generator`` reproduces any cached view.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, default_collate

from ..errors import InputError
from ..files import atomic_write, handle_sha256
from ..frozen import EncoderKey, FrozenEncoder
from ..progress import progress
from .images import decoding_workers, file_problem, load_rgb
from .records import Record, std_tensor, target_tensor
from .transforms import ImageTransform

CACHE_FORMAT = "2"  # the layout of a shard; the settings that change features are keyed themselves
DEFAULT_CACHE_DIRNAME = ".feature_cache"
SHARD_ROWS = 1024  # records per shard: the unit of building, checking and resuming
MAX_MANIFEST_BYTES = 64 << 20
MAX_HEADER_BYTES = 1 << 16  # a .npy header (numpy writes 128 bytes; format 2.0 allows more)
# bfloat16 has no numpy type: its 16 bits are stored as int16 and viewed back.
STORED_DTYPES = {"float32": ("<f4", torch.float32), "float16": ("<f2", torch.float16),
                 "bfloat16": ("<i2", torch.bfloat16), "float64": ("<f8", torch.float64)}


# --- keys ------------------------------------------------------------------------------------------
def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def row_identity(record: Record) -> list:
    """One manifest row: the sample's name and what identifies its file's content cheaply: absolute path (no
    symlink resolution: a syscall per folder level, slow on large datasets), size and modification time."""
    stat = os.stat(record.path)
    return [record.file_name, os.path.abspath(record.path), stat.st_size, stat.st_mtime_ns]


def view_seed(file_name: str, view: int) -> int:
    return int(_sha256(f"{file_name}\0{view}")[:15], 16)


def view_generator(file_name: str, view: int) -> torch.Generator:
    """The generator that draws training view ``view`` of an image: the same view on every run."""
    return torch.Generator().manual_seed(view_seed(file_name, view))


def transform_hash(transform: ImageTransform) -> str:
    return _sha256(json.dumps(transform.describe(), sort_keys=True))[:16]


def shard_name(identities: Sequence[list]) -> str:
    """Names and paths of the shard's rows (not their size or mtime: a changed image rewrites the same shard)."""
    return f"shard-{_sha256(json.dumps([row[:2] for row in identities]))[:32]}"


# --- shards on disk --------------------------------------------------------------------------------
@dataclass
class Shard:
    """An opened, verified shard: its manifest rows and its features (rows, views, dim), memory-mapped."""

    name: str
    rows: list
    features: torch.Tensor
    extra: dict = field(default_factory=dict)

    @property
    def views(self) -> int:
        return self.features.shape[1]


class _HashingWriter:
    """Writes to a file and hashes what it writes (the checksum of exactly the bytes on disk)."""

    def __init__(self, handle, digest):
        self.handle, self.digest = handle, digest

    def write(self, data) -> int:
        self.digest.update(data)
        return self.handle.write(data)


class DamagedFile(Exception):
    """A cache file that is there but cannot be used: ``reason`` says why (the warning names the file)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason


def open_regular(path: Path, limit: int):
    """``path`` opened for reading if it is a regular file of at most ``limit`` bytes; None when it is not there;
    ``DamagedFile`` otherwise. A FIFO or device is refused by type before opening, and the open never waits (a FIFO
    swapped in after the check is refused by its descriptor's type), so a planted file cannot block a run."""
    problem = file_problem(path)
    if problem == "not found":
        return None
    if problem is not None:
        raise DamagedFile(path, problem)
    try:
        handle = os.fdopen(os.open(path, os.O_RDONLY | os.O_NONBLOCK), "rb")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise DamagedFile(path, f"cannot be read: {error.strerror or error}") from None
    info = os.fstat(handle.fileno())
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        handle.close()
        raise DamagedFile(path, "not a regular file" if not stat.S_ISREG(info.st_mode)
                          else f"{info.st_size:,} bytes, more than the {limit:,} such a file can be")
    return handle


_warned: set[str] = set()  # files already named in a warning by this process


def warn_damaged(damage: DamagedFile) -> None:
    """One warning line per bad cache file (it is rebuilt, never used)."""
    if str(damage.path) not in _warned:
        _warned.add(str(damage.path))
        warnings.warn(f"feature cache file {damage.path} is not usable ({damage.reason}); rebuilding it", stacklevel=3)


def _whole_number(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class ShardStore:
    """One folder of shards under one key: ``<name>.npy`` (rows, views, dim) and ``<name>.json`` (its manifest).
    ``dim``, when known, is the feature size every shard must have (the encoder's)."""

    def __init__(self, folder: Path, key: dict, dim: int | None = None):
        self.folder = Path(folder)
        self.key = key
        self.dim = dim

    def _manifest(self, name: str) -> dict | None:
        """The manifest if it is there and written under this key; None if missing or under other settings;
        ``DamagedFile`` if it is there but cannot be one."""
        path = self.folder / f"{name}.json"
        handle = open_regular(path, MAX_MANIFEST_BYTES)
        if handle is None:
            return None
        with handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
        try:
            manifest = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError):  # not UTF-8, not JSON
            raise DamagedFile(path, "not valid JSON") from None
        if not isinstance(manifest, dict) or manifest.get("format") != CACHE_FORMAT or manifest.get("key") != self.key:
            return None  # another layout or other settings: not this store's shard
        shape, rows = manifest.get("shape"), manifest.get("rows")
        if (not isinstance(rows, list) or not isinstance(shape, list) or len(shape) != 3
                or not all(_whole_number(n) for n in shape) or shape[0] != len(rows)
                or manifest.get("dtype") not in STORED_DTYPES or not isinstance(manifest.get("sha256"), str)):
            raise DamagedFile(path, "its shape, dtype, rows or checksum are missing or inconsistent")
        if self.dim is not None and shape[2] != self.dim:
            raise DamagedFile(path, f"features of size {shape[2]}, the encoder gives {self.dim}")
        return manifest

    def manifest(self, name: str) -> dict | None:
        """The manifest, or None (missing, other settings or damaged: never an error)."""
        try:
            return self._manifest(name)
        except DamagedFile:
            return None

    def open(self, name: str) -> Shard | None:
        """The shard if its manifest has this key and its array file is the one the manifest describes (checksum,
        dtype, shape, size) with usable features; else None (missing, damaged, or written under other settings): never
        a partial shard. A file that is there but damaged is named in one warning."""
        try:
            return self._open(name)
        except DamagedFile as damage:
            warn_damaged(damage)
            return None

    def _open(self, name: str) -> Shard | None:
        manifest = self._manifest(name)
        if manifest is None:
            return None
        numpy_dtype, torch_dtype = STORED_DTYPES[manifest["dtype"]]
        path = self.folder / f"{name}.npy"
        rows, views, dim = manifest["shape"]
        payload = rows * views * dim * np.dtype(numpy_dtype).itemsize
        handle = open_regular(path, MAX_HEADER_BYTES + payload)
        if handle is None:
            raise DamagedFile(path, "missing, its manifest is there")
        with handle:  # one open file: checked, hashed and mapped are the same
            try:
                version = np.lib.format.read_magic(handle)
                read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                               else np.lib.format.read_array_header_2_0)
                shape, fortran, dtype = read_header(handle)
            except (OSError, ValueError, SyntaxError, TypeError):
                raise DamagedFile(path, "not a numpy array file") from None
            if list(shape) != manifest["shape"] or fortran or dtype.str != numpy_dtype or dtype.hasobject:
                raise DamagedFile(path, f"holds {dtype.str} {tuple(shape)}, its manifest describes {numpy_dtype} "
                                        f"{tuple(manifest['shape'])}")
            offset = handle.tell()
            size = os.fstat(handle.fileno()).st_size
            if size != offset + payload:
                raise DamagedFile(path, f"{size:,} bytes, its manifest describes {offset + payload:,}")
            handle.seek(0)
            if handle_sha256(handle) != manifest["sha256"]:
                raise DamagedFile(path, "its checksum differs from its manifest's")
            array = np.memmap(handle, dtype=dtype, mode="c", shape=shape, offset=offset) if payload else \
                np.empty(shape, dtype)
        features = torch.from_numpy(array)
        if torch_dtype == torch.bfloat16:
            features = features.view(torch.bfloat16)
        problem = feature_problem(features)
        if problem is not None:
            raise DamagedFile(path, problem)
        return Shard(name, manifest["rows"], features, manifest.get("extra") or {})

    def write(self, name: str, rows: list, features: torch.Tensor, extra: dict | None = None) -> None:
        """Array first, then the manifest that vouches for it, each atomically: a killed run leaves either a whole
        shard or one that fails its check. A planted FIFO or link in the way is replaced, never written through."""
        dtype = str(features.dtype).removeprefix("torch.")
        if dtype not in STORED_DTYPES:
            raise TypeError(f"cannot cache {features.dtype} features")
        features = features.detach().to("cpu").contiguous()
        array = (features.view(torch.int16) if features.dtype == torch.bfloat16 else features).numpy()
        digest = hashlib.sha256()
        manifest = {"format": CACHE_FORMAT, "key": self.key, "dtype": dtype, "shape": list(features.shape),
                    "sha256": None, "rows": rows, "extra": extra or {}}
        target = self.folder / f"{name}.npy"
        try:
            with atomic_write(target, "wb") as handle:
                np.lib.format.write_array(_HashingWriter(handle, digest), array, allow_pickle=False)
            manifest["sha256"] = digest.hexdigest()
            target = self.folder / f"{name}.json"
            with atomic_write(target) as handle:
                json.dump(manifest, handle)
        except IsADirectoryError:
            raise InputError(f"feature cache file {target} is a folder: delete it, or give another "
                             "--data.cache_dir") from None

    def names(self) -> list[str]:
        return sorted(p.stem for p in self.folder.glob("*.json")) if self.folder.is_dir() else []


def feature_problem(features: torch.Tensor) -> str | None:
    """Why cached features cannot be used (NaN or infinite values, a feature vector of zeros), or None. One
    vectorised pass: a CLIP projection is never exactly zero, so a zero vector means a planted or broken file."""
    if features.numel() == 0:
        return None
    if not bool(torch.isfinite(features).all()):
        return "NaN or infinite features"
    if not bool(features.reshape(-1, features.shape[-1]).ne(0).any(dim=1).all()):
        return "features that are all zero"
    return None


# --- the features of a split -----------------------------------------------------------------------
class ShardedFeatures:
    """The cached features of a split, ``shape`` (records, views, dim), as memory-mapped shards of ``rows_per_shard``
    records (the last may be shorter). Rows are read when indexed: a process holds only what it touches."""

    def __init__(self, shards: Sequence[torch.Tensor], rows_per_shard: int):
        if not shards:
            raise ValueError("no shards")
        self.shards = list(shards)
        self.rows_per_shard = rows_per_shard
        self.shape = torch.Size((sum(len(s) for s in self.shards), *self.shards[0].shape[1:]))
        self.dtype = self.shards[0].dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        shard, row = divmod(int(index), self.rows_per_shard)
        return self.shards[shard][row]

    def gather(self, rows: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
        """(batch, dim): view ``views[i]`` of record ``rows[i]``."""
        if len(self.shards) == 1:
            return self.shards[0][rows, views]
        shard_of, local = rows // self.rows_per_shard, rows % self.rows_per_shard
        out = torch.empty((len(rows), self.shape[2]), dtype=self.dtype)
        for shard in torch.unique(shard_of).tolist():
            chosen = shard_of == shard
            out[chosen] = self.shards[shard][local[chosen], views[chosen]]
        return out

    def materialize(self) -> torch.Tensor:
        """Every row in memory, (records, views, dim): for small sets and tests."""
        return torch.cat(self.shards)


@dataclass
class PromptTable:
    """The frozen text features of distinct generation prompts: ``features[i]`` belongs to ``prompts[i]``."""

    prompts: list[str]
    features: torch.Tensor  # (prompts, dim)

    def rows_of(self, prompts: Sequence[str]) -> torch.Tensor:
        position = {p: i for i, p in enumerate(self.prompts)}
        return torch.tensor([position[str(p)] for p in prompts], dtype=torch.long)


# --- building --------------------------------------------------------------------------------------
@dataclass
class _Todo:
    """A row to (re)build: the views it already has and those it still needs."""

    index: int
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
    """Builds and opens cached features.

    Args:
        directory: the cache folder.
        encoder: the frozen-encoder handle (``CLIPAGIQAModel.frozen_encoder()``): its key is part of every shard's
            key; its encoders build missing rows.
        batch_size: images per encoder call while building.
        num_workers: DataLoader workers that decode and transform images while building.
        forward_context: wraps each encoder call (the trainer's precision, e.g. bf16 autocast).
        rank, world_size, barrier: under DDP each rank builds the shards ``rank::world_size`` of a split, then all
            wait at ``barrier`` and map every shard.
        progress: show a progress bar while building on a terminal (rank 0 only; in a log, rank 0 writes lines).
        shard_rows: records per shard.
    """

    def __init__(self, directory: str | Path, encoder: FrozenEncoder, batch_size: int = 32, num_workers: int = 0,
                 forward_context: Callable = nullcontext, rank: int = 0, world_size: int = 1,
                 barrier: Callable[[], None] = lambda: None, progress: bool = True, shard_rows: int = SHARD_ROWS):
        self.directory = Path(directory).expanduser()
        self.encoder = encoder
        self.batch_size = max(1, batch_size)
        self.num_workers = num_workers
        self.forward_context = forward_context
        self.rank = rank
        self.world_size = world_size
        self.barrier = barrier
        self.progress = progress
        self.shard_rows = max(1, shard_rows)
        self.built_views = 0  # image views encoded by this process (what tests and the benchmark count)
        self.built_prompts = 0  # generation prompts encoded by this process
        self._feature_dim: int | None = None

    @property
    def feature_dim(self) -> int:
        """The encoder's feature size (the projection: the same for images and texts), what every shard must hold."""
        if self._feature_dim is None:
            self._feature_dim = int(self.encoder.encode_texts([])[0].shape[-1])  # no text: no forward pass
        return self._feature_dim

    @property
    def key(self) -> EncoderKey:
        return self.encoder.key

    def folder(self, transform: ImageTransform) -> Path:
        return self.directory / self.key.folder_name() / transform_hash(transform)

    def store(self, transform: ImageTransform) -> ShardStore:
        return ShardStore(self.folder(transform), {"encoder": self.key.describe(), "transform": transform.describe()},
                          self.feature_dim)

    def shards(self, records: Sequence[Record]) -> list[tuple[str, list[Record], list[list]]]:
        """The split's shards: (name, records, their manifest rows) per ``shard_rows`` consecutive records (each
        image's file is looked at once here)."""
        identities = [row_identity(r) for r in records]
        return [(shard_name(identities[start: start + self.shard_rows]), list(records[start: start + self.shard_rows]),
                 identities[start: start + self.shard_rows]) for start in range(0, len(records), self.shard_rows)]

    def features(self, records: Sequence[Record], transform: ImageTransform, views: int = 1) -> ShardedFeatures:
        """Features of every record, (records, views, dim), memory-mapped: this rank builds its missing shards, then
        every rank opens them all."""
        views = views if transform.train else 1
        if views < 1:
            raise InputError(f"cache_views must be at least 1, got {views}")
        if not records:
            raise ValueError("no records to cache")
        store, shards = self.store(transform), self.shards(records)
        checked = {}  # shards found valid (or written) while building: not hashed twice by this process
        for number, (name, part, identities) in enumerate(shards):
            if number % self.world_size == self.rank:
                checked[name] = self._ensure(store, name, part, identities, transform, views)
        self.barrier()
        opened = []
        for name, part, identities in shards:
            shard = checked.get(name) or self._valid(store, name, identities, views)
            if shard is None:  # another rank failed to write it, or it went bad since: rebuild here, never use it
                shard = self._ensure(store, name, part, identities, transform, views)
            if shard is None:
                raise RuntimeError(f"feature cache {store.folder}: shard {name} vanished while reading; is another "
                                   "run writing the same cache with different settings?")
            opened.append(shard.features[:, :views])
        return ShardedFeatures(opened, self.shard_rows)

    @staticmethod
    def _valid(store: ShardStore, name: str, identities: list[list], views: int) -> Shard | None:
        shard = store.open(name)
        if shard is None or shard.views < views or shard.rows != identities:
            return None
        return shard

    def build(self, records: Sequence[Record], transform: ImageTransform, views: int,
              share: Sequence[int] | None = None) -> int:
        """Build the missing or invalid shards among ``share`` (shard numbers; default: all); returns how many rows
        were encoded."""
        views = views if transform.train else 1
        store, shards = self.store(transform), self.shards(records)
        before = self.built_views
        for number in range(len(shards)) if share is None else share:
            self._ensure(store, *shards[number], transform, views)
        return (self.built_views - before) // views

    def _ensure(self, store: ShardStore, name: str, records: Sequence[Record], identities: list[list],
                transform: ImageTransform, views: int) -> Shard | None:
        """The shard, valid for ``records`` (whose manifest rows are ``identities``) with at least ``views`` views:
        opened as it is, or rebuilt from the rows it still has right, rows other shards of this transform hold, and
        newly encoded views."""
        shard = store.open(name)
        if shard is not None and shard.views >= views and shard.rows == identities:
            return shard
        width = max(views, shard.views if shard is not None else 0)
        kept = {} if shard is None else {json.dumps(row): i for i, row in enumerate(shard.rows)}
        elsewhere = _Elsewhere(store, exclude=name)
        rows: list[torch.Tensor | None] = [None] * len(records)
        todo = []
        for index, identity in enumerate(identities):
            have = shard.features[kept[json.dumps(identity)]] if json.dumps(identity) in kept else None
            if have is None or have.shape[0] < width:
                have = elsewhere.longest(identity, have)
            if have is not None and have.shape[0] >= width:
                rows[index] = have[:width]
            else:
                start = 0 if have is None else have.shape[0]
                todo.append(_Todo(index, have, list(range(start, width))))
        for todo_entry, features in self._encode(todo, records, transform):
            existing = todo_entry.existing
            rows[todo_entry.index] = (features if existing is None
                                      else torch.cat([existing.to(features.dtype), features]))
        dtype = next(r.dtype for r in rows if r is not None)
        features = torch.stack([r.to(dtype) for r in rows])
        problem = feature_problem(features)
        if problem is not None:  # never cached, never trained on: the encoder itself is broken
            bad = next(i for i, row in enumerate(features) if feature_problem(row.unsqueeze(0)) is not None)
            raise InputError(f"the frozen encoder gave {problem} for {records[bad].file_name}: check the backbone's "
                             "weights and --trainer.precision")
        store.write(name, identities, features)
        return self._valid(store, name, identities, views)

    @torch.no_grad()
    def _encode(self, todo: list[_Todo], records: Sequence[Record], transform: ImageTransform):
        """(todo entry, its new views' features on the CPU), as batches finish."""
        if not todo:
            return
        views_per_image = max(len(t.views) for t in todo)
        loader = DataLoader(_ViewPixels(todo, records, transform),
                            batch_size=max(1, self.batch_size // views_per_image),
                            num_workers=decoding_workers(self.num_workers), collate_fn=_collate,
                            pin_memory=self.encoder.device().type == "cuda")
        description = f"caching {'train' if transform.train else 'eval'} features ({views_per_image} view(s))"
        # A DataLoader draws its seed from the global RNG: fork it, so a run trains the same whether
        # or not it had to build the cache first.
        show = self.progress and self.rank == 0
        with torch.random.fork_rng(devices=[]), progress(len(todo), description, bar=show, lines=self.rank == 0) as bar:
            for items, counts, pixels in loader:
                with self.forward_context():
                    features = self.encoder.encode_images(pixels)
                for item, chunk in zip(items, features.detach().to("cpu").split(counts)):
                    yield todo[item], chunk
                self.built_views += pixels.shape[0]
                bar.update(len(items))

    # --- generation prompts ------------------------------------------------------------------------
    def prompt_table(self, prompts: Sequence[str]) -> PromptTable:
        """The frozen text features of the distinct ``prompts``: built once (rank 0, one batched pass), then read from
        disk by every rank and every later run on the same prompts."""
        distinct = sorted({str(p) for p in prompts})
        store = ShardStore(self.directory / self.key.folder_name() / "prompts",
                           {"encoder": self.key.describe(), "kind": "generation prompts"}, self.feature_dim)
        name = f"prompts-{_sha256(json.dumps(distinct))[:32]}"
        shard = self._valid_prompts(store, name, distinct) if self.rank != 0 else None
        if self.rank == 0:
            shard = self._valid_prompts(store, name, distinct) or self._build_prompts(store, name, distinct)
        self.barrier()
        if shard is None:
            shard = self._valid_prompts(store, name, distinct) or self._build_prompts(store, name, distinct)
        truncated = shard.extra.get("truncated", 0)
        if truncated and self.rank == 0:
            warnings.warn(f"{truncated} of {len(distinct)} generation prompt(s) are longer than the text encoder's "
                          "window and were truncated", stacklevel=2)
        return PromptTable(distinct, shard.features[:, 0])

    @staticmethod
    def _valid_prompts(store: ShardStore, name: str, distinct: list[str]) -> Shard | None:
        shard = store.open(name)
        return shard if shard is not None and shard.rows == distinct else None

    @torch.no_grad()
    def _build_prompts(self, store: ShardStore, name: str, distinct: list[str]) -> Shard:
        with self.forward_context():
            features, truncated = self.encoder.encode_texts(distinct)
        problem = feature_problem(features)
        if problem is not None:
            raise InputError(f"the frozen text encoder gave {problem} for the generation prompts: check the "
                             "backbone's weights and --trainer.precision")
        self.built_prompts += len(distinct)
        store.write(name, distinct, features.float().cpu().unsqueeze(1), extra={"truncated": int(truncated)})
        shard = self._valid_prompts(store, name, distinct)
        if shard is None:
            raise RuntimeError(f"feature cache {store.folder}: {name} could not be read back after writing it")
        return shard


class _Elsewhere:
    """Rows other shards of one transform hold, looked up by identity (their manifests read only when needed)."""

    def __init__(self, store: ShardStore, exclude: str):
        self.store, self.exclude = store, exclude
        self.index: dict[str, tuple[str, int]] | None = None
        self.opened: dict[str, Shard | None] = {}

    def longest(self, identity: list, have: torch.Tensor | None) -> torch.Tensor | None:
        """The row with the most views among ``have`` and what another shard holds for ``identity``."""
        if self.index is None:
            self.index = {}
            for name in self.store.names():
                manifest = self.store.manifest(name) if name != self.exclude else None
                for row, other in enumerate(manifest["rows"] if manifest else []):
                    self.index.setdefault(json.dumps(other), (name, row))
        found = self.index.get(json.dumps(identity))
        if found is None:
            return have
        name, row = found
        if name not in self.opened:
            self.opened[name] = self.store.open(name)
        shard = self.opened[name]
        if shard is None or len(shard.rows) <= row or shard.rows[row] != identity:
            return have
        other = shard.features[row]
        return other if have is None or other.shape[0] > have.shape[0] else have


# --- the dataset training and evaluation read ------------------------------------------------------
class CachedFeatures(Dataset):
    """Cached features: ``features`` (one view, drawn at random per access when there are several), ``mos`` (as
    ``ImageDataset`` gives it: a scalar for one target, one value per target for several), ``prompt``, ``index``,
    ``file_name`` and ``error`` - the batch ``CLIPAGIQA`` reads instead of ``image`` - and, with a prompt table,
    ``text_features`` (the generation prompt's frozen features). ``names=False`` (training) leaves out the
    per-sample strings (``file_name``, ``prompt``, ``error``), which a training step never reads but Lightning would
    walk through on every batch.

    A loader fetches a whole batch at once (``__getitems__``: tensor indexing, no per-sample Python); give it
    ``collate_fn=dataset.collate_fn``."""

    in_memory = True  # nothing to decode: loaders need no workers

    def __init__(self, records: Sequence[Record], features: torch.Tensor | ShardedFeatures,
                 targets: list[str] | None = None, prompt_table: PromptTable | None = None, names: bool = True):
        if isinstance(features, torch.Tensor):
            if features.dim() != 3:
                raise ValueError(f"expected features (n_records, views, dim), got {tuple(features.shape)}")
            features = ShardedFeatures([features], max(1, len(features)))
        if len(features) != len(records):
            raise ValueError(f"expected features for {len(records)} records, got {tuple(features.shape)}")
        self.records = list(records)
        self.features = features
        self.mos = torch.stack([target_tensor(r, targets) for r in self.records])
        self.mos_std = torch.stack([std_tensor(r, targets) for r in self.records])
        self.file_names = [r.file_name for r in self.records]
        self.prompts = [r.prompt or "" for r in self.records]
        self.prompt_table = prompt_table
        self.prompt_rows = prompt_table.rows_of(self.prompts) if prompt_table is not None else None
        self.names = names

    def __len__(self) -> int:
        return len(self.records)

    def __getitems__(self, indices: Sequence[int]) -> dict:
        rows = torch.as_tensor(indices, dtype=torch.long)
        views = self.features.shape[1]
        view = torch.randint(views, (len(rows),)) if views > 1 else torch.zeros(len(rows), dtype=torch.long)
        batch = {"features": self.features.gather(rows, view), "mos": self.mos[rows], "mos_std": self.mos_std[rows],
                 "index": rows}
        if self.names:
            batch.update(file_name=[self.file_names[i] for i in indices], prompt=[self.prompts[i] for i in indices],
                         error=[""] * len(rows))
        if self.prompt_rows is not None:
            batch["text_features"] = self.prompt_table.features[self.prompt_rows[rows]]
        return batch

    def __getitem__(self, index: int) -> dict:
        batch = self.__getitems__([index])
        return {key: value[0] for key, value in batch.items()}

    @staticmethod
    def collate_fn(batch):
        """A batch from ``__getitems__`` is already whole; a list of items (a loader without batching) is collated."""
        return batch if isinstance(batch, dict) else default_collate(batch)


# --- wiring to a Trainer ---------------------------------------------------------------------------
def default_cache_dir(data_root: Path, trainer=None) -> Path:
    """``<data root>/.feature_cache`` (shared by every run on that data), or the run folder's
    ``feature_cache`` when the data folder is read-only."""
    data_root = Path(data_root).expanduser()
    if os.access(data_root, os.W_OK):
        return data_root / DEFAULT_CACHE_DIRNAME
    run_root = Path(trainer.default_root_dir) if trainer is not None else Path.cwd()
    return run_root / "feature_cache"


def cache_for_trainer(trainer, encoder: FrozenEncoder | None, directory: str | Path | None, data_root: Path,
                      batch_size: int, num_workers: int) -> FeatureCache:
    """A cache that encodes with ``encoder`` (a model's frozen-encoder handle) under the trainer's precision,
    sharded by rank."""
    if encoder is None or trainer is None:
        raise InputError("cache_views > 0 needs the frozen encoders a Trainer hands to the datamodule "
                         "(fit/validate/test/predict) to encode the images; set cache_views: 0 to use the "
                         "datamodule on its own")
    return FeatureCache(
        directory or default_cache_dir(data_root, trainer), encoder.under_precision(trainer.precision),
        batch_size=batch_size, num_workers=num_workers, forward_context=trainer.precision_plugin.forward_context,
        rank=trainer.global_rank, world_size=trainer.world_size,
        barrier=lambda: trainer.strategy.barrier("feature_cache"), progress=trainer.progress_bar_callback is not None,
    )

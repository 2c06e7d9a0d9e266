"""The shared LightningDataModule: records -> split -> datasets -> loaders, exact under DDP."""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import InputError
from ..files import atomic_write
from ..frozen import ImageSettings
from ..run_files import DATA_FILE, SPLITS_FILE
from ..text import first_and_more
from .cache import CachedFeatures, PromptTable, cache_for_trainer
from .checks import image_problems
from .images import BACKGROUND, error_reason, file_problem, load_rgb
from .readers import Reader
from .records import (
    Record,
    check_records,
    require_inside_root,
    selected_targets,
    std_tensor,
    target_tensor,
    target_value,
)
from .splits import SPLITS, assign, split_summary, write_splits
from .transforms import ImageTransform, checked_augment, low_high

MAX_SPLITS_BYTES = 256 << 20  # a split file lists names: a million images' is tens of MB


def check_splits_file(path: Path) -> None:
    """A split file (an earlier run's splits.csv, perhaps a stranger's) is a regular file of bounded size, or a
    split folder, before anything opens it: a FIFO would block the reader, a device never end."""
    if path.is_dir():
        return
    problem = file_problem(path)
    if problem is not None and problem != "not found":  # a missing one: the split reader names what it expects
        raise InputError(f"--data.splits_file {path}: {problem}")
    if problem is None and path.stat().st_size > MAX_SPLITS_BYTES:
        raise InputError(f"--data.splits_file {path}: {path.stat().st_size:,} bytes, more than the "
                         f"{MAX_SPLITS_BYTES:,} a split file can be")


class ImageDataset(Dataset):
    """Loads and transforms one record per item: ``image``, ``mos``, ``index``, ``file_name`` and ``error``.

    ``error`` is "" when the image was read. An unlabelled record (MOS NaN: a folder to score) whose image
    cannot be read gives a blank placeholder image and the reason in ``error``, so one bad file does not
    lose a whole predict run; a labelled one raises (``validate_records`` has named it before training).
    """

    def __init__(self, records: list[Record], transform: ImageTransform, targets: list[str] | None = None):
        self.records = records
        self.transform = transform
        self.targets = targets

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int):
        return load_rgb(self.records[index].path)

    def image_or_placeholder(self, index: int) -> tuple[Image.Image, str]:
        try:
            return self.load_image(index), ""
        except (ValueError, FileNotFoundError) as error:
            if not math.isnan(self.records[index].mos):
                raise
            size = self.transform.settings.size
            return Image.new("RGB", (size, size), BACKGROUND), error_reason(error)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image, error = self.image_or_placeholder(index)
        return {
            "image": self.transform(image),
            "mos": target_tensor(record, self.targets),
            "mos_std": std_tensor(record, self.targets),  # NaN where the data gives no raters' std
            "prompt": record.prompt or "",
            "index": index,
            "file_name": record.file_name,
            "error": error,
        }


class MOSDataModule(L.LightningDataModule):
    """The one datamodule: a reader's records -> split -> datasets -> loaders. ``--data AGIQA3K`` etc. are thin
    subclasses that name their reader (``clip_agiqa.data.readers``) and its options.

    Args:
        root: the dataset folder.
        reader: turns root into records (``Reader``); subclasses pass theirs.
        target: the target(s) to learn, one of the reader's (default: its first) or a list of them.
        batch_size: training batch size; ``eval_batch_size`` (default: the same) for val/test/predict.
        num_workers: DataLoader worker processes that decode and transform images (default: the CPU cores this
            process may use, at most 8).
        test_size: fraction of samples held out for test.
        val_size: fraction of the remaining samples used for validation (checkpoint selection).
        seed: seed of the split (the same seed gives the same split on any machine).
        crop_scale: area range of the training random resized crop.
        augment: the training view: ``resized_crop`` (the paper's), ``crop`` (a window at the eval views' pixel
            scale, never rescaled, and a flip) or ``none`` (the eval view); see ``transforms.AUGMENTATIONS``.
        predict_split: which samples ``predict`` scores: ``test``, ``val``, ``train`` or ``all``.
        test_split: which samples ``test`` evaluates: ``test``, or ``all`` (another dataset's every image: the
            benchmark's ``--test_on``).
        image_size: input size when neither ``image_settings`` are given nor a model is attached.
        image_settings: the backbone's image settings (size, mean, std), e.g. from
            ``clip_agiqa.backbone.image_settings_of(backbone id)``; default: a model's, when one is handed over.
        allow_outside_root: read images that resolve outside ``root`` (``../`` or absolute names, symlinks that
            lead out); refused by default, since a shared folder's annotations must not reach other files.
        split: the split protocol: ``random``, ``prompt`` (no prompt in two of train/val/test), ``kfold``,
            ``predefined`` (``splits_file``) or ``paper`` (the published 80/20 split, val = test; for
            reproduction only). See ``clip_agiqa.data.splits``.
        folds, fold: the number of folds and the test fold (``split: kfold``).
        splits_file: a CSV ``file_name,split`` (``split: predefined``), e.g. an earlier run's splits.csv.
        skip_bad_images: decode every image once before training and leave out unreadable ones (one
            warning counts them); otherwise an unreadable image stops the run with its file name. Either check
            runs once per file version (``clip_agiqa.data.checks``: recorded in the cache folder, threaded, on one
            rank under DDP).
        cache_views: cache the frozen image features (``clip_agiqa.cache``): this many augmented views per
            training image, one centre view for val/test/predict; 0 (default) encodes every image every time.
        cache_dir: the cache folder (default: ``<root>/.feature_cache``, or the run folder's
            ``feature_cache`` when root is read-only).
    """

    def __init__(
        self,
        root: str,
        reader: Reader | None = None,
        target: str | list[str] | None = None,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        test_size: float = 0.2,
        val_size: float = 0.1,
        seed: int = 0,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        augment: Literal["resized_crop", "crop", "none"] = "resized_crop",
        predict_split: str = "test",
        test_split: str = "test",
        image_size: int | None = None,
        split: Literal["random", "prompt", "kfold", "predefined", "paper"] = "random",
        folds: int = 5,
        fold: int = 0,
        splits_file: str | None = None,
        skip_bad_images: bool = False,
        cache_views: int = 0,
        cache_dir: str | None = None,
        image_settings: ImageSettings | None = None,
        allow_outside_root: bool = False,
    ):
        super().__init__()
        self.root = Path(root).expanduser()
        self.reader = reader or Reader()
        if target is not None or self.reader.targets:
            selected_targets(self.reader.targets[0] if target is None else target, self.reader.targets,
                             self.reader.name)
        self.target = target if target is not None else (self.reader.targets or ("quality",))[0]
        for name, size in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
                raise InputError(f"{name} must be 1 or more images per batch, got {size!r}")
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        self.num_workers = min(8, cores) if num_workers is None else num_workers
        self.test_size = test_size
        self.val_size = val_size
        self.seed = seed
        self.crop_scale = low_high(crop_scale)
        self.augment = checked_augment(augment)
        self.predict_split = predict_split
        self.test_split = test_split
        self.image_size = image_size
        self.split = split
        self.folds = folds
        self.fold = fold
        self.splits_file = splits_file
        self.skip_bad_images = skip_bad_images
        if cache_views < 0:
            raise InputError(f"cache_views must be 0 (no cache) or a number of views, got {cache_views}")
        self.cache_views = cache_views
        self.cache_dir = cache_dir
        self.given_image_settings = image_settings
        self.allow_outside_root = allow_outside_root
        self.annotation_order: list[str] | None = None
        self.encoder = None  # the FrozenEncoder handed over by use_encoder
        self.read_prompts = False  # cached datasets carry the generation prompts' features (use_encoder)
        self._prompt_table: PromptTable | None = None
        self.records: list[Record] | None = None
        self.images_checked = False  # check_images passed in this process
        self.assignment: list[str] | None = None

    # --- the reader's records -------------------------------------------------------------------------
    @property
    def mos_scale(self) -> tuple[float, float] | None:
        """The benchmark's fixed MOS scale (the reader's), or None: measured on the training split."""
        return self.reader.mos_scale

    def scales_fixed(self) -> bool:
        """Whether every selected target's scale is fixed by the dataset (nothing measured)."""
        return all(self.reader.scale_of(name) is not None for name in self.targets)

    def load_records(self) -> list[Record]:
        """The reader's records, each with the first selected target first (its ``mos``)."""
        records = self.reader.read(self.root)
        first = self.targets[0]
        for record in records:
            if first in record.targets:
                record.targets = {first: record.targets[first], **record.targets}
        return records

    def assign_splits(self, records: list[Record]) -> list[str]:
        if self.split == "paper":
            warnings.warn("split=paper reproduces the published protocol for reproduction only: one 80/20 split "
                          "(random_state 42) and no validation set, so the test set also picks the checkpoint "
                          "and its metrics are optimistic. Use split=prompt or random for honest results.",
                          stacklevel=2)
        if self.split == "predefined" and self.splits_file:
            check_splits_file(Path(self.splits_file).expanduser())
        return assign(self.split, records, test_size=self.test_size, val_size=self.val_size, seed=self.seed,
                      folds=self.folds, fold=self.fold, splits_file=self.splits_file,
                      annotation_order=self.annotation_order, left_out=self.reader.left_out)

    def validate_records(self, records: list[Record]) -> list[Record]:
        """Checked records: missing files named at once, images outside the root refused, and with
        ``skip_bad_images`` the images that do not decode left out (one warning). The header check of the
        others waits for ``check_images`` (prepare_data / setup), so reading the split needs no image."""
        check_records(records, str(self.root))
        if not self.allow_outside_root:
            require_inside_root(records, self.root)
        if self.skip_bad_images:
            bad = image_problems(records, "decode", self.check_folder())
            if bad:
                warnings.warn(f"skip_bad_images: left out {len(bad)} of {len(records)} unreadable image(s), e.g. "
                              f"{first_and_more([r.file_name for r, _ in bad], 5)}", stacklevel=2)
                bad_names = {r.file_name for r, _ in bad}
                records = [r for r in records if r.file_name not in bad_names]
        return records

    def check_folder(self) -> Path | None:
        """Where the record of passed image checks goes: the cache folder (``cache_dir``, else the root's)."""
        return Path(self.cache_dir).expanduser() if self.cache_dir else self.root / ".feature_cache"

    def check_images(self) -> None:
        """One error that counts and names every labelled image whose header is unreadable, before any training.
        Unlabelled records (a folder to score) are not pre-checked: predict lists an unreadable one in its CSV.
        Every way to a dataset passes here (prepare_data, setup, make_dataset); it runs once per process."""
        self.load()
        if self.skip_bad_images or self.images_checked:
            return  # with skip_bad_images every image was decoded by load
        labelled = [r for r in self.records if not math.isnan(r.mos)]
        problems = image_problems(labelled, "header", self.check_folder())
        if problems:
            shown = first_and_more([f"{r.file_name} ({problem})" for r, problem in problems], 5, "; ")
            raise InputError(f"{self.root}: {len(problems)} of {len(labelled)} image(s) cannot be read: {shown}. "
                             "Replace or remove them, or leave them out with --data.skip_bad_images true")
        self.images_checked = True

    # --- shared machinery ----------------------------------------------------------------------------
    def load(self) -> None:
        """Read and check the records and split them (once)."""
        if self.records is not None:
            return
        loaded = self.load_records()
        self.annotation_order = [r.file_name for r in loaded]  # the paper split follows the file's order
        records = self.validate_records(sorted(loaded, key=lambda r: r.file_name))
        self.records = records
        self.assignment = self.assign_splits(records)

    def split_records(self, split: str) -> list[Record]:
        self.load()
        if split == "all":
            return list(self.records)
        if split not in SPLITS:
            raise InputError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or all")
        if split == "val" and self.split == "paper":
            split = "test"  # the published protocol has no validation set
        return [r for r, s in zip(self.records, self.assignment) if s == split]

    def use_encoder(self, encoder, read_prompts: bool = False) -> None:
        """Take the image settings (size, mean, std) and the feature cache's encoders from a frozen-encoder handle
        (``clip_agiqa.frozen.FrozenEncoder``, what ``CLIPAGIQAModel.frozen_encoder()`` hands out; never the model).
        With ``read_prompts``, cached datasets also carry each sample's generation-prompt features. The training
        task hands it over through a callback before any loader is made."""
        self.encoder = encoder
        self.read_prompts = read_prompts
        self._prompt_table = None

    def image_settings(self) -> ImageSettings:
        """The settings given, else those of the encoder handed over (``use_encoder``), else CLIP's at
        ``image_size``."""
        if self.given_image_settings is not None:
            return self.given_image_settings
        if self.encoder is not None:
            return self.encoder.image_settings
        return ImageSettings(self.image_size or 224)

    @property
    def targets(self) -> list[str]:
        """The names of the targets a model learns from this data, in order (``target``: one name or a list)."""
        target = self.target or "quality"
        return [target] if isinstance(target, str) else list(target)

    @property
    def target_scales(self) -> dict[str, list[float]] | None:
        """Each target's (low, high) MOS scale: the dataset's fixed scale (``Reader.scale_of``: known without reading
        anything), else the range of the training split's values; None without labels (a folder to score)."""
        fixed = {name: self.reader.scale_of(name) for name in self.targets}
        if all(scale is not None for scale in fixed.values()):
            return {name: [float(v) for v in scale] for name, scale in fixed.items()}
        train = self.split_records("train")
        if not train or any(math.isnan(r.mos) for r in train):
            return None
        scales = {name: [float(v) for v in scale] for name, scale in fixed.items() if scale is not None}
        for name in (name for name in self.targets if fixed[name] is None):
            values = [target_value(r, name) for r in train]
            low, high = min(values), max(values)
            if not high > low:
                raise InputError(f"{self.root}: every training value of {name} is {low}: there is nothing to learn")
            scales[name] = [low, high]
        return {name: scales[name] for name in self.targets}  # the targets' order: one model output each

    @property
    def has_rater_std(self) -> bool:
        """Whether the training split gives the raters' std of any MOS (``mos_std``): a fit's default model then
        predicts a score distribution trained against it."""
        return any(math.isfinite(std) for record in self.split_records("train") for std in record.stds.values())

    def sample_groups(self) -> dict[str, dict[str, str]]:
        """Every sample's groups by name (its generator and the dataset's own groups: task ...), for results per
        group; empty for samples without any."""
        self.load()
        return {r.file_name: {**({"generator": r.generator} if r.generator else {}), **r.groups} for r in self.records}

    def generation_prompts(self) -> list[str]:
        """The prompt of every sample, for a model that reads them; samples without one are named."""
        self.load()
        missing = [r.file_name for r in self.records if not (r.prompt and str(r.prompt).strip())]
        if missing:
            raise InputError(f"{self.root}: the model reads each image's generation prompt (use_prompt), but "
                             f"{len(missing)} of {len(self.records)} sample(s) have none, e.g. "
                             f"{', '.join(missing[:5])}")
        return [r.prompt for r in self.records]

    def make_dataset(self, split: str) -> Dataset:
        self.check_images()
        records = self.split_records(split)
        if not records:
            raise InputError(f"{self.root}: the {split} split is empty; change test_size/val_size or add samples")
        if self.read_prompts:
            self.generation_prompts()  # a model that reads prompts: samples without one are named before any step
        transform = ImageTransform(self.image_settings(), train=split == "train", crop_scale=self.crop_scale,
                                   augment=self.augment)
        if self.cache_views:
            return self.cached_dataset(records, transform)
        return ImageDataset(records, transform, self.targets)

    def cached_dataset(self, records: list[Record], transform: ImageTransform) -> Dataset:
        """Features from the cache (built now where missing, with the encoder handed over, on its device),
        memory-mapped; with ``read_prompts``, the generation prompts' features too (every prompt of the data encoded
        once)."""
        cache = cache_for_trainer(self.trainer, self.encoder, self.cache_dir, self.root, self.eval_batch_size,
                                  self.num_workers)
        if self.read_prompts and self._prompt_table is None:
            self._prompt_table = cache.prompt_table(self.generation_prompts())
        features = cache.features(records, transform, self.cache_views)
        return CachedFeatures(records, features, self.targets, self._prompt_table if self.read_prompts else None,
                              names=not transform.train)

    def prepare_data(self) -> None:
        """The image check on one process per node (Lightning calls this before ``setup``); it records what
        passed, so the other ranks' ``setup`` finds every file checked. A problem is not raised here: the other
        ranks would wait at Lightning's barrier for good; every rank meets it again in ``setup`` and stops."""
        try:
            self.check_images()
        except Exception:  # noqa: BLE001 - raised again, on every rank, by setup
            pass

    def setup(self, stage: str | None = None) -> None:
        self.check_images()

    def world(self) -> tuple[int, int]:
        """(rank, world size) of the trainer this datamodule serves; (0, 1) without one."""
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def dataloader(self, split: str, rank: int | None = None, world_size: int | None = None) -> DataLoader:
        """An evaluation loader over ``split`` (train, val, test or all) for this process of ``world_size``
        (default: the trainer's): what a caller outside Lightning's fit/test uses, e.g. a cross-dataset test."""
        default_rank, default_world = self.world()
        return self._loader(self.make_dataset(split), train=False,
                            world=(default_rank if rank is None else rank,
                                   default_world if world_size is None else world_size))

    def _loader(self, dataset: Dataset, train: bool, world: tuple[int, int] | None = None) -> DataLoader:
        sampler = None
        rank, world_size = world or self.world()
        workers = 0 if getattr(dataset, "in_memory", False) else self.num_workers  # cached features: nothing to decode
        if not train and world_size > 1:
            # Lightning's default sampler pads with repeated samples, which biases SRCC/PLCC.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
            collate_fn=getattr(dataset, "collate_fn", None),  # cached features come batched (CachedFeatures)
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.make_dataset("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.make_dataset("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.make_dataset(self.test_split), train=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.make_dataset(self.predict_split), train=False)

    def save_splits(self, directory: Path) -> Path:
        """Write ``splits.csv`` (file_name,split) and ``data.json`` (the data class, split summary and MOS scale,
        measured or fixed) into directory, beside the run's checkpoints: what reproduces the run's data."""
        self.load()
        path = Path(directory) / SPLITS_FILE
        write_splits(path, self.records, self.assignment)
        about = {"data": type(self).__name__, "root": str(self.root), **split_summary(self),
                 "targets": self.target_scales,
                 "mos_scale_from": "fixed by the benchmark" if self.scales_fixed() else "training split"}
        with atomic_write(Path(directory) / DATA_FILE) as handle:
            handle.write(json.dumps(about, indent=2) + "\n")
        return path

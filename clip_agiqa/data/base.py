"""The shared LightningDataModule: records -> split -> datasets -> loaders, exact under DDP."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from PIL import Image
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from ..backbone import CLIP_MEAN, CLIP_STD, ImageSettings
from ..cache import CachedFeatures, cache_for_trainer
from ..reporting import split_summary
from .records import Record, check_records, target_tensor, target_value
from .splits import SPLITS, assign, write_splits
from .images import BACKGROUND, load_rgb, require_readable, scan_images
from .transforms import ImageTransform

SPLITS_FILE = "splits.csv"
DATA_FILE = "data.json"


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
            return Image.new("RGB", (size, size), BACKGROUND), str(error)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        image, error = self.image_or_placeholder(index)
        return {
            "image": self.transform(image),
            "mos": target_tensor(record, self.targets),
            "prompt": record.prompt or "",
            "index": index,
            "file_name": record.file_name,
            "error": error,
        }


class MOSDataModule(L.LightningDataModule):
    """Base of every dataset: subclasses only say how to read their records (``load_records``).

    Args:
        root: the dataset folder.
        batch_size: training batch size; ``eval_batch_size`` (default: the same) for val/test/predict.
        num_workers: DataLoader worker processes that decode and transform images.
        test_size: fraction of samples held out for test.
        val_size: fraction of the remaining samples used for validation (checkpoint selection).
        seed: seed of the split (the same seed gives the same split on any machine).
        crop_scale: area range of the training random resized crop.
        predict_split: which samples ``predict`` scores: ``test``, ``val``, ``train`` or ``all``.
        image_size: input size when no model is attached (otherwise the backbone's settings are used).
        split: the split protocol: ``random``, ``prompt`` (no prompt in two of train/val/test), ``kfold``,
            ``predefined`` (``splits_file``) or ``paper`` (the published 80/20 split, val = test; for
            reproduction only). See ``clip_agiqa.data.splits``.
        folds, fold: the number of folds and the test fold (``split: kfold``).
        splits_file: a CSV ``file_name,split`` (``split: predefined``), e.g. an earlier run's splits.csv.
        skip_bad_images: decode every image once before training and leave out unreadable ones (one
            warning counts them); otherwise an unreadable image stops the run with its file name.
        cache_views: cache the frozen image features (``clip_agiqa.cache``): this many augmented views per
            training image, one centre view for val/test/predict; 0 (default) encodes every image every time.
        cache_dir: the cache folder (default: ``<root>/.feature_cache``, or the run folder's
            ``feature_cache`` when root is read-only).
    """

    mos_range: tuple[float, float] | None = None  # a benchmark's fixed MOS scale; else measured on train

    def __init__(
        self,
        root: str,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 2,
        test_size: float = 0.2,
        val_size: float = 0.1,
        seed: int = 0,
        crop_scale: tuple[float, float] = (0.08, 1.0),
        predict_split: str = "test",
        image_size: int | None = None,
        split: Literal["random", "prompt", "kfold", "predefined", "paper"] = "random",
        folds: int = 5,
        fold: int = 0,
        splits_file: str | None = None,
        skip_bad_images: bool = False,
        cache_views: int = 0,
        cache_dir: str | None = None,
    ):
        super().__init__()
        self.root = Path(root).expanduser()
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.test_size = test_size
        self.val_size = val_size
        self.seed = seed
        self.crop_scale = tuple(crop_scale)
        self.predict_split = predict_split
        self.image_size = image_size
        self.split = split
        self.folds = folds
        self.fold = fold
        self.splits_file = splits_file
        self.skip_bad_images = skip_bad_images
        if cache_views < 0:
            raise ValueError(f"cache_views must be 0 (no cache) or a number of views, got {cache_views}")
        self.cache_views = cache_views
        self.cache_dir = cache_dir
        self.annotation_order: list[str] | None = None
        self.model = None  # the CLIPAGIQAModel handed over by use_model
        self.records: list[Record] | None = None
        self.assignment: list[str] | None = None

    # --- what subclasses provide ---------------------------------------------------------------------
    def load_records(self) -> list[Record]:
        raise NotImplementedError

    def assign_splits(self, records: list[Record]) -> list[str]:
        if self.split == "paper":
            warnings.warn("split=paper reproduces the published protocol for reproduction only: one 80/20 split "
                          "(random_state 42) and no validation set, so the test set also picks the checkpoint "
                          "and its metrics are optimistic. Use split=prompt or random for honest results.",
                          stacklevel=2)
        return assign(self.split, records, test_size=self.test_size, val_size=self.val_size, seed=self.seed,
                      folds=self.folds, fold=self.fold, splits_file=self.splits_file,
                      annotation_order=self.annotation_order)

    def validate_records(self, records: list[Record]) -> list[Record]:
        """Checked records: missing files and unreadable images all named at once, before any training.

        ``skip_bad_images`` leaves unreadable images out instead. Unlabelled records (a folder to score)
        are not pre-checked: predict lists an unreadable one in its CSV with the error.
        """
        check_records(records, str(self.root))
        if self.skip_bad_images:
            return scan_images(records)
        require_readable([r for r in records if not math.isnan(r.mos)], str(self.root))
        return records

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
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or all")
        if split == "val" and self.split == "paper":
            split = "test"  # the published protocol has no validation set
        return [r for r, s in zip(self.records, self.assignment) if s == split]

    def use_model(self, model) -> None:
        """Take the image settings (size, mean, std) from a ``CLIPAGIQAModel``, and encode the feature cache
        with it. The training task hands its model over through a callback before any loader is made."""
        self.model = model

    def image_settings(self) -> ImageSettings:
        if self.model is not None:
            return self.model.image_settings
        return ImageSettings(self.image_size or 224, CLIP_MEAN, CLIP_STD)

    @property
    def targets(self) -> list[str]:
        """The names of the targets a model learns from this data, in order (``target``: one name or a list)."""
        target = getattr(self, "target", None) or "quality"
        return [target] if isinstance(target, str) else list(target)

    @property
    def target_scales(self) -> dict[str, list[float]] | None:
        """Each target's (low, high) MOS scale: a benchmark's fixed scale (``mos_range``), else the range of the
        training split's values; None without labels (a folder to score)."""
        train = self.split_records("train")
        if not train or any(math.isnan(r.mos) for r in train):
            return None
        scales = {}
        for name in self.targets:
            if self.mos_range is not None:
                scales[name] = [float(v) for v in self.mos_range]
                continue
            values = [target_value(r, name) for r in train]
            low, high = min(values), max(values)
            if not high > low:
                raise ValueError(f"{self.root}: every training value of {name} is {low}: there is nothing to learn")
            scales[name] = [low, high]
        return scales

    def generation_prompts(self) -> list[str]:
        """The prompt of every sample, for a model that reads them; samples without one are named."""
        self.load()
        missing = [r.file_name for r in self.records if not (r.prompt and str(r.prompt).strip())]
        if missing:
            raise ValueError(f"{self.root}: the model reads each image's generation prompt (use_prompt), but "
                             f"{len(missing)} of {len(self.records)} sample(s) have none, e.g. "
                             f"{', '.join(missing[:5])}")
        return [r.prompt for r in self.records]

    def make_dataset(self, split: str) -> Dataset:
        records = self.split_records(split)
        if not records:
            raise ValueError(f"{self.root}: the {split} split is empty; change test_size/val_size or add samples")
        transform = ImageTransform(self.image_settings(), train=split == "train", crop_scale=self.crop_scale)
        if self.cache_views:
            return self.cached_dataset(records, transform)
        return ImageDataset(records, transform, self.targets)

    def cached_dataset(self, records: list[Record], transform: ImageTransform) -> Dataset:
        """Features from the cache (built now where missing, with the attached model on its device)."""
        cache = cache_for_trainer(self.trainer, self.model, self.cache_dir, self.root, self.eval_batch_size,
                                  self.num_workers)
        return CachedFeatures(records, cache.features(records, transform, self.cache_views), self.targets)

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        sampler = None
        trainer = self.trainer
        workers = 0 if getattr(dataset, "in_memory", False) else self.num_workers  # cached features: nothing to decode
        if not train and trainer is not None and trainer.world_size > 1:
            # Lightning's default sampler pads with repeated samples, which biases SRCC/PLCC.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size,
                                                   rank=trainer.global_rank, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            sampler=sampler,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.make_dataset("train"), train=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.make_dataset("val"), train=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.make_dataset("test"), train=False)

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
                 "mos_scale_from": "fixed by the benchmark" if self.mos_range is not None else "training split"}
        (Path(directory) / DATA_FILE).write_text(json.dumps(about, indent=2) + "\n")
        return path

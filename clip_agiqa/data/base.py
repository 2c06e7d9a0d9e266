"""The shared LightningDataModule: records -> split -> datasets -> loaders, exact under DDP."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from torch.utils.data import DataLoader, Dataset

from ..backbone import CLIP_MEAN, CLIP_STD, ImageSettings
from .records import Record, check_records
from .splits import SPLITS, random_split, write_splits
from .transforms import ImageTransform, load_rgb

SPLITS_FILE = "splits.csv"


class ImageDataset(Dataset):
    """Loads and transforms one record per item: ``image``, ``mos``, ``index`` and ``file_name``."""

    def __init__(self, records: list[Record], transform: ImageTransform):
        self.records = records
        self.transform = transform

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict:
        record = self.records[index]
        return {
            "image": self.transform(load_rgb(record.path)),
            "mos": torch.tensor(record.mos, dtype=torch.float32),
            "index": index,
            "file_name": record.file_name,
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
    """

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
        self.records: list[Record] | None = None
        self.assignment: list[str] | None = None

    # --- what subclasses provide ---------------------------------------------------------------------
    def load_records(self) -> list[Record]:
        raise NotImplementedError

    def assign_splits(self, records: list[Record]) -> list[str]:
        return random_split(len(records), self.test_size, self.val_size, self.seed)

    # --- shared machinery ----------------------------------------------------------------------------
    def load(self) -> None:
        """Read and check the records and split them (once)."""
        if self.records is not None:
            return
        records = sorted(self.load_records(), key=lambda r: r.file_name)
        check_records(records, str(self.root))
        self.records = records
        self.assignment = self.assign_splits(records)

    def split_records(self, split: str) -> list[Record]:
        self.load()
        if split == "all":
            return list(self.records)
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)} or all")
        return [r for r, s in zip(self.records, self.assignment) if s == split]

    def image_settings(self) -> ImageSettings:
        model = self.trainer.lightning_module if self.trainer is not None else None
        if model is not None and hasattr(model, "image_settings"):
            return model.image_settings
        return ImageSettings(self.image_size or 224, CLIP_MEAN, CLIP_STD)

    def make_dataset(self, split: str) -> Dataset:
        records = self.split_records(split)
        if not records:
            raise ValueError(f"{self.root}: the {split} split is empty; change test_size/val_size or add samples")
        transform = ImageTransform(self.image_settings(), train=split == "train", crop_scale=self.crop_scale)
        return ImageDataset(records, transform)

    def setup(self, stage: str | None = None) -> None:
        self.load()

    def _loader(self, dataset: Dataset, train: bool) -> DataLoader:
        sampler = None
        trainer = self.trainer
        if not train and trainer is not None and trainer.world_size > 1:
            # Lightning's default sampler pads with repeated samples, which biases SRCC/PLCC.
            sampler = UnrepeatedDistributedSampler(dataset, num_replicas=trainer.world_size,
                                                   rank=trainer.global_rank, shuffle=False)
        return DataLoader(
            dataset,
            batch_size=self.batch_size if train else self.eval_batch_size,
            shuffle=train,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
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
        """Write ``splits.csv`` (file_name,split) into directory, beside the run's checkpoints."""
        self.load()
        path = Path(directory) / SPLITS_FILE
        write_splits(path, self.records, self.assignment)
        return path

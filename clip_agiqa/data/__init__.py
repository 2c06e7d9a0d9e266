"""Datamodules: every dataset shares MOSDataModule (split protocol, transforms, DDP-exact loaders)."""

from .base import ImageDataset, MOSDataModule
from .folder import ImageFolder, MOSFolder
from .records import Record
from .synthetic import SyntheticAIGI, write_synthetic_dataset

__all__ = ["ImageDataset", "MOSDataModule", "ImageFolder", "MOSFolder", "Record", "SyntheticAIGI",
           "write_synthetic_dataset"]

"""Datamodules: every dataset shares MOSDataModule (split protocol, transforms, DDP-exact loaders)."""

from .base import ImageDataset, MOSDataModule
from .agiqa1k import AGIQA1K
from .agiqa3k import AGIQA3K
from .aigciqa20k import AIGCIQA20K
from .aigciqa2023 import AIGCIQA2023
from .hub import HFDataset
from .folder import ImageFolder, MOSFolder
from .records import Record
from .synthetic import SyntheticAIGI, write_synthetic_dataset

__all__ = ["AGIQA1K", "AGIQA3K", "AIGCIQA2023", "AIGCIQA20K", "HFDataset", "ImageDataset", "MOSDataModule",
           "ImageFolder", "MOSFolder", "Record", "SyntheticAIGI", "write_synthetic_dataset"]

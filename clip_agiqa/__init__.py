"""clip-agiqa: CLIP-AGIQA, a quality model for AI-generated images, on Lightning and transformers."""

from .backbone import load_backbone
from .data import (AGIQA1K, AGIQA3K, AIGCIQA20K, AIGCIQA2023, HFDataset, ImageFolder, MOSDataModule, MOSFolder,
                   SyntheticAIGI)
from .module import CLIPAGIQA
from .export import export_checkpoint, load, load_model
from .scoring import QualityScorer

__all__ = ["AGIQA1K", "AGIQA3K", "AIGCIQA2023", "AIGCIQA20K", "HFDataset", "CLIPAGIQA", "ImageFolder",
           "MOSDataModule", "MOSFolder", "SyntheticAIGI", "load_backbone",
           "QualityScorer", "export_checkpoint", "load", "load_model"]
__version__ = "0.1.0"

"""clip-agiqa: CLIP-AGIQA, a quality model for AI-generated images, on Lightning and transformers."""

from .backbone import load_backbone
from .data import ImageFolder, MOSDataModule, MOSFolder, SyntheticAIGI
from .module import CLIPAGIQA
from .export import export_checkpoint, load, load_model
from .scoring import QualityScorer

__all__ = ["CLIPAGIQA", "ImageFolder", "MOSDataModule", "MOSFolder", "SyntheticAIGI", "load_backbone",
           "QualityScorer", "export_checkpoint", "load", "load_model"]
__version__ = "0.1.0"

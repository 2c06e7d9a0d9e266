"""clip-agiqa: CLIP-AGIQA, a quality model for AI-generated images, on Lightning and transformers.

Scoring (``load``, ``QualityScorer``, ``CLIPAGIQAModel``) imports neither Lightning nor torchmetrics; the
training pieces (``CLIPAGIQA`` and the datamodules) are imported on first use.
"""

from importlib import import_module

__version__ = "0.1.0"

# public name -> the module that defines it (imported when the name is first used)
_EXPORTS = {
    "CLIPAGIQAModel": ".model",
    "load_backbone": ".backbone",
    "QualityScorer": ".scoring", "load": ".scoring",
    "export_checkpoint": ".export", "load_model": ".model", "CLIPAGIQAConfig": ".config",
    "CLIPAGIQA": ".module",
    **{name: ".data" for name in ("AGIQA1K", "AGIQA3K", "AIGCIQA20K", "AIGCIQA2023", "HFDataset", "ImageFolder",
                                  "MOSDataModule", "MOSFolder", "SyntheticAIGI")},
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'clip_agiqa' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)

"""Datamodules: every dataset shares MOSDataModule (split protocol, transforms, DDP-exact loaders).

The datamodules (Lightning) are imported on first use, so the light modules here (records, images,
transforms) serve scoring without Lightning.
"""

from importlib import import_module

_EXPORTS = {
    "ImageDataset": ".base", "MOSDataModule": ".base",
    "AGIQA1K": ".agiqa1k", "AGIQA3K": ".agiqa3k", "AIGCIQA20K": ".aigciqa20k", "AIGCIQA2023": ".aigciqa2023",
    "HFDataset": ".hub", "ImageFolder": ".folder", "MOSFolder": ".folder", "Record": ".records",
    "SyntheticAIGI": ".synthetic", "write_synthetic_dataset": ".synthetic",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'clip_agiqa.data' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)

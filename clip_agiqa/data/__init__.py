"""Data: readers (a dataset's files -> records, no Lightning) and the one datamodule that takes a reader
(split protocol, transforms, DDP-exact loaders); ``AGIQA3K`` etc. are thin datamodules naming their reader.

Everything is imported on first use, so the light modules here (records, readers, images, transforms) serve
scoring without Lightning. Nothing here imports the model side (a test enforces it).
"""

from importlib import import_module

_EXPORTS = {
    "ImageDataset": ".base", "MOSDataModule": ".base",
    "AGIQA1K": ".agiqa1k", "AGIQA3K": ".agiqa3k", "AIGCIQA20K": ".aigciqa20k", "AIGCIQA2023": ".aigciqa2023",
    "HFDataset": ".hub", "ImageFolder": ".folder", "MOSFolder": ".folder", "Record": ".records",
    "SyntheticAIGI": ".synthetic", "write_synthetic_dataset": ".synthetic",
    "Reader": ".readers", "AGIQA3KReader": ".agiqa3k", "AGIQA1KReader": ".agiqa1k",
    "AIGCIQA2023Reader": ".aigciqa2023", "AIGCIQA20KReader": ".aigciqa20k", "MOSFolderReader": ".folder",
    "ImageFolderReader": ".folder", "HubReader": ".hub", "SyntheticReader": ".synthetic",
    "ImageSettings": "..frozen",
    "EvalMi50K": ".evalmi50k", "EvalMi50KReader": ".evalmi50k",
    "TableData": ".table", "TableReader": ".table", "TableDescription": ".table",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'clip_agiqa.data' has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)

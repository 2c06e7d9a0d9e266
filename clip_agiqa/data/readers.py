"""Readers: how one dataset's files become records, apart from Lightning and the split.

A reader describes a dataset as data (its name, valid targets, fixed MOS scale) and turns a root folder into
``Record`` s holding every target the annotations give, each record naming its annotation row (``where``).
``MOSDataModule(root, reader=...)`` takes any reader; the CLI's ``--data AGIQA3K`` etc. are thin datamodules
that only name their reader and its options. Adding a dataset is one small file: a ``Reader`` subclass with
``read`` (and, for the CLI, a datamodule subclass passing it).
"""

from __future__ import annotations

from pathlib import Path

from .records import Record


class Reader:
    """Turns a dataset root into records, without Lightning.

    Attributes:
        name: the dataset's name in messages.
        targets: the targets it has, the first being the default; None: any numeric column the user names.
        mos_scale: a benchmark's fixed (low, high) MOS scale; None: measured on the training split.
        left_out: after ``read``, names the annotations list but ``read`` left out on purpose (e.g. an
            ambiguous duplicate): a published split file may still name them.
    """

    name = "dataset"
    targets: tuple[str, ...] | None = ("quality",)
    mos_scale: tuple[float, float] | None = None

    def __init__(self) -> None:
        self.left_out: frozenset[str] = frozenset()

    def read(self, root: Path) -> list[Record]:
        raise NotImplementedError

    def scale_of(self, target: str) -> tuple[float, float] | None:
        """One target's fixed (low, high) scale, or None (measured on the training split); a dataset whose targets
        have different scales (EvalMi-50K's 0-100 MOS and 0/1 task answer) overrides it."""
        return self.mos_scale

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

"""Fixtures of the data tests."""

from __future__ import annotations

import shutil

import pytest

from clip_agiqa.data import Record


@pytest.fixture
def images(synthetic_root, tmp_path) -> list[Record]:
    """Four private copies of the shared synthetic images (tests change them)."""
    folder = tmp_path / "images"
    folder.mkdir()
    records = []
    for index, source in enumerate(sorted(synthetic_root.glob("*.png"))[:4]):
        shutil.copy2(source, folder / source.name)
        records.append(Record(source.name, folder / source.name, {"mos": float(index)}))
    return records

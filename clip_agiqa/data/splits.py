"""Train/val/test assignment of records, reproducible from a seed on any machine."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from .records import Record

SPLITS = ("train", "val", "test")


def random_split(n: int, test_size: float, val_size: float, seed: int) -> list[str]:
    """Shuffle with numpy's PCG64 (stable across platforms); ``val_size`` is a fraction of what is not test."""
    if not 0 < test_size < 1 or not 0 <= val_size < 1:
        raise ValueError(f"test_size must be in (0, 1) and val_size in [0, 1), got {test_size}, {val_size}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_size))
    n_val = round((n - n_test) * val_size)
    if val_size > 0:
        n_val = max(1, n_val)
    if n - n_test - n_val < 1:
        raise ValueError(f"{n} samples are too few for test_size={test_size} and val_size={val_size}")
    assignment = ["train"] * n
    for position, index in enumerate(order):
        if position < n_test:
            assignment[index] = "test"
        elif position < n_test + n_val:
            assignment[index] = "val"
    return assignment


def write_splits(path: Path, records: list[Record], assignment: list[str]) -> None:
    """``file_name,split`` for every sample, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".csv.partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "split"])
        writer.writerows((record.file_name, split) for record, split in zip(records, assignment))
    partial.replace(path)

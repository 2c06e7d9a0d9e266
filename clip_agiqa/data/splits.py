"""Train/val/test assignment of records, reproducible from a seed on any machine.

Protocols (``split``):
    random      samples shuffled with the seed; ``test_size`` for test, ``val_size`` of the rest for val.
    prompt      the same over prompts: no prompt appears in two of train/val/test (the honest protocol
                for generated images, where one prompt yields several images of similar quality).
    kfold       ``folds`` equal parts of the shuffled samples; part ``fold`` is test, ``val_size`` of
                the rest is val. Run ``fold = 0 .. folds-1`` for cross-validation.
    predefined  a CSV ``file_name,split`` (split in train/val/test), e.g. a published split or the
                ``splits.csv`` of an earlier run. Without val rows, val is drawn from train.
    paper       the published CLIP-AGIQA code: sklearn's ``train_test_split(test_size=0.2,
                random_state=42)`` over the annotation file's order, no validation set. For
                reproduction only: the test set is also the validation set that picks the checkpoint.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from .records import Record

SPLITS = ("train", "val", "test")
PROTOCOLS = ("random", "prompt", "kfold", "predefined", "paper")
PAPER_SEED = 42
PAPER_TEST_SIZE = 0.2


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


def _draw_val(assignment: list[str], val_size: float, seed: int) -> list[str]:
    """Move ``val_size`` of the train samples to val (seeded)."""
    train = [i for i, s in enumerate(assignment) if s == "train"]
    n_val = max(1, round(len(train) * val_size)) if val_size > 0 else 0
    if len(train) - n_val < 1:
        raise ValueError(f"{len(train)} training samples are too few for val_size={val_size}")
    assignment = list(assignment)
    for position in np.random.default_rng(seed).permutation(len(train))[:n_val]:
        assignment[train[position]] = "val"
    return assignment


def prompt_split(prompts: list[str | None], test_size: float, val_size: float, seed: int) -> list[str]:
    """``random_split`` over the distinct prompts; every image follows its prompt."""
    missing = sum(p is None or not str(p).strip() for p in prompts)
    if missing:
        raise ValueError(f"split=prompt needs a prompt for every sample, but {missing} of {len(prompts)} have none")
    distinct = sorted(set(prompts))  # sorted: the same order on any machine, whatever the record order
    if len(distinct) < 3:
        raise ValueError(f"split=prompt needs at least 3 distinct prompts, found {len(distinct)}")
    by_prompt = dict(zip(distinct, random_split(len(distinct), test_size, val_size, seed)))
    return [by_prompt[p] for p in prompts]


def kfold_split(n: int, folds: int, fold: int, val_size: float, seed: int) -> list[str]:
    """Part ``fold`` of ``folds`` (shuffled with the seed) is test; val is drawn from the rest."""
    if folds < 2 or not 0 <= fold < folds:
        raise ValueError(f"kfold needs folds >= 2 and 0 <= fold < folds, got folds={folds}, fold={fold}")
    if n < folds:
        raise ValueError(f"{n} samples are too few for {folds} folds")
    assignment = ["train"] * n
    for index in np.array_split(np.random.default_rng(seed).permutation(n), folds)[fold]:
        assignment[index] = "test"
    return _draw_val(assignment, val_size, seed + 1)


def paper_split(annotation_order: list[str], names: list[str]) -> list[str]:
    """The published split: sklearn ``train_test_split(test_size=0.2, random_state=42)`` reimplemented
    (RandomState(42).permutation, the first ceil(0.2 n) are test) over the annotation file's row order,
    returned for ``names`` (any order). Train/test only."""
    n = len(annotation_order)
    n_test = math.ceil(PAPER_TEST_SIZE * n)
    permutation = np.random.RandomState(PAPER_SEED).permutation(n)
    test = {annotation_order[i] for i in permutation[:n_test]}
    return ["test" if name in test else "train" for name in names]


def read_splits(path: Path, names: list[str], val_size: float, seed: int) -> list[str]:
    """The assignment of ``names`` from a ``file_name,split`` CSV; every error names the file and row."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"splits file {path} not found (split=predefined needs a CSV file_name,split)")
    given: dict[str, str] = {}
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        if "file_name" not in columns or "split" not in columns:
            raise ValueError(f"{path}: needs columns file_name,split; the columns are {', '.join(columns) or 'none'}")
        for row_number, row in enumerate(reader, start=2):
            name, split = (row["file_name"] or "").strip(), (row["split"] or "").strip().lower()
            if not name:
                raise ValueError(f"{path}, row {row_number}: empty file_name")
            if split not in SPLITS:
                raise ValueError(f"{path}, row {row_number}: split {row['split']!r} is not one of {', '.join(SPLITS)}")
            if name in given:
                raise ValueError(f"{path}, row {row_number}: {name} is listed twice")
            given[name] = split
    unknown = sorted(set(given) - set(names))
    if unknown:
        raise ValueError(f"{path}: {len(unknown)} name(s) are not samples of this dataset, e.g. {', '.join(unknown[:5])}")
    unlisted = [name for name in names if name not in given]
    if unlisted:
        raise ValueError(f"{path}: {len(unlisted)} of {len(names)} samples have no split, e.g. {', '.join(unlisted[:5])}")
    assignment = [given[name] for name in names]
    if "val" not in given.values() and val_size > 0:
        assignment = _draw_val(assignment, val_size, seed)
    return assignment


def assign(protocol: str, records: list[Record], *, test_size: float, val_size: float, seed: int,
           folds: int = 5, fold: int = 0, splits_file: str | None = None,
           annotation_order: list[str] | None = None) -> list[str]:
    """The split of every record under one protocol (see the module docstring)."""
    names = [r.file_name for r in records]
    if protocol == "random":
        return random_split(len(records), test_size, val_size, seed)
    if protocol == "prompt":
        return prompt_split([r.prompt for r in records], test_size, val_size, seed)
    if protocol == "kfold":
        return kfold_split(len(records), folds, fold, val_size, seed)
    if protocol == "predefined":
        if not splits_file:
            raise ValueError("split=predefined needs splits_file: a CSV with columns file_name,split")
        return read_splits(Path(splits_file), names, val_size, seed)
    if protocol == "paper":
        return paper_split(annotation_order or names, names)
    raise ValueError(f"unknown split protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def write_splits(path: Path, records: list[Record], assignment: list[str]) -> None:
    """``file_name,split`` for every sample, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".csv.partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "split"])
        writer.writerows((record.file_name, split) for record, split in zip(records, assignment))
    partial.replace(path)

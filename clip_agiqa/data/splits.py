"""Train/val/test assignment of records, reproducible from a seed on any machine.

Protocols (``split``):
    random      samples shuffled with the seed; ``test_size`` for test, ``val_size`` of the rest for val.
    prompt      the same over prompts: no prompt appears in two of train/val/test (the honest protocol
                for generated images, where one prompt yields several images of similar quality).
                With a ``splits_file``, train and test come from the file and val is drawn by prompt.
    kfold       ``folds`` equal parts of the shuffled samples; part ``fold`` is test, ``val_size`` of
                the rest is val. Run ``fold = 0 .. folds-1`` for cross-validation.
    predefined  ``splits_file``: a published split or the ``splits.csv`` of an earlier run (see below).
    paper       the published CLIP-AGIQA code: sklearn's ``train_test_split(test_size=0.2,
                random_state=42)`` over the annotation file's order, no validation set. For
                reproduction only: the test set is also the validation set that picks the checkpoint.

A ``splits_file`` is either
    a CSV ``file_name,split`` (split in train/val/test), e.g. an earlier run's ``splits.csv``; or
    a split folder in IPCE's layout (``Database/<benchmark>/<k>/``): ``train.csv`` and ``test.csv``, or
        ``train.csv`` and ``val.csv`` read as the test set when there is no ``test.csv`` (with all three,
        ``val.csv`` is val). Rows name the image in a ``file_name``, ``name``, ``image_name`` or ``Image``
        column (the first present, any capitalisation); the dataset's own columns beside it are not read.
        A ``model`` column is joined in front of a name that is not a sample itself (IPCE's AIGCIQA2023
        rows: ``model=DALLE, image_name=000-1.png`` -> ``DALLE/000-1.png``).
Every sample must be listed and every name must be one of the dataset's own sample names (AGIQA-3K
``AttnGAN_normal_000.jpg``, AIGCIQA2023 ``<Model>/NNN-k.png`` whatever its image layout); the error names the file, row
and a few offending names; a name that points outside the data root (``../``, absolute) is named as such. Published
split folders have known slips, read as their authors meant: a name listed twice in one part is read once, and a name in
both train and test (IPCE's AGIQA-1K folders 2, 3, 5 and 10 list ``dreamStudio_8_9_1_1.jpg`` so) is taken out of train;
a warning names each. A name the dataset left out on purpose (AGIQA-1K's doubly-listed ``dreamStudio_8_9_1_1.jpg`` by
default) is passed over. Without val rows, val (``val_size`` of train) is drawn the way the test set was: by prompt when
train and test share no prompt (always with ``split: prompt``), at random otherwise. The run's ``splits.csv`` records
the result.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from ..csv_cells import safe_writer, unescape_formula
from ..errors import InputError
from ..files import atomic_write
from ..text import first_and_more
from .records import MissingFile, Record, read_csv_rows

SPLITS = ("train", "val", "test")
PROTOCOLS = ("random", "prompt", "kfold", "predefined", "paper")
PAPER_SEED = 42
PAPER_TEST_SIZE = 0.2
NAME_COLUMNS = ("file_name", "name", "image_name", "image")  # a split folder's name column, any capitalisation
PREFIX_COLUMN = "model"  # IPCE's AIGCIQA2023 rows: the generator's folder of the image


def random_split(n: int, test_size: float, val_size: float, seed: int) -> list[str]:
    """Shuffle with numpy's PCG64 (stable across platforms); ``val_size`` is a fraction of what is not test."""
    if not 0 < test_size < 1 or not 0 <= val_size < 1:
        raise InputError(f"test_size must be in (0, 1) and val_size in [0, 1), got {test_size}, {val_size}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = max(1, round(n * test_size))
    n_val = round((n - n_test) * val_size)
    if val_size > 0:
        n_val = max(1, n_val)
    if n - n_test - n_val < 1:
        raise InputError(f"{n} samples are too few for test_size={test_size} and val_size={val_size}")
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
        raise InputError(f"{len(train)} training samples are too few for val_size={val_size}")
    assignment = list(assignment)
    for position in np.random.default_rng(seed).permutation(len(train))[:n_val]:
        assignment[train[position]] = "val"
    return assignment


def _draw_val_by_prompt(assignment: list[str], prompts: list[str | None], val_size: float, seed: int) -> list[str]:
    """Move ``val_size`` of the train prompts (seeded, sorted first: any record order) with all their images
    to val, so that val shares no prompt with train."""
    train_prompts = sorted({p for p, s in zip(prompts, assignment) if s == "train"})
    n_val = max(1, round(len(train_prompts) * val_size))
    if len(train_prompts) - n_val < 1:
        raise InputError(f"{len(train_prompts)} training prompts are too few for val_size={val_size}")
    chosen = {train_prompts[i] for i in np.random.default_rng(seed).permutation(len(train_prompts))[:n_val]}
    return ["val" if s == "train" and p in chosen else s for p, s in zip(prompts, assignment)]



def prompt_split(prompts: list[str | None], test_size: float, val_size: float, seed: int) -> list[str]:
    """``random_split`` over the distinct prompts; every image follows its prompt."""
    missing = sum(p is None or not str(p).strip() for p in prompts)
    if missing:
        raise InputError(f"split=prompt needs a prompt for every sample, but {missing} of {len(prompts)} have none")
    distinct = sorted(set(prompts))  # sorted: the same order on any machine, whatever the record order
    if len(distinct) < 3:
        raise InputError(f"split=prompt needs at least 3 distinct prompts, found {len(distinct)}")
    by_prompt = dict(zip(distinct, random_split(len(distinct), test_size, val_size, seed)))
    return [by_prompt[p] for p in prompts]


def kfold_split(n: int, folds: int, fold: int, val_size: float, seed: int) -> list[str]:
    """Part ``fold`` of ``folds`` (shuffled with the seed) is test; val is drawn from the rest."""
    if folds < 2 or not 0 <= fold < folds:
        raise InputError(f"kfold needs folds >= 2 and 0 <= fold < folds, got folds={folds}, fold={fold}")
    if n < folds:
        raise InputError(f"{n} samples are too few for {folds} folds")
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


Given = list[tuple[tuple[str, ...], str, str]]  # (names to try, in order; split; "file, row N")


def _read_split_csv(path: Path) -> Given:
    """The rows of a ``file_name,split`` CSV."""
    given: Given = []
    rows = read_csv_rows(path)  # UTF-8, bounded fields, blank rows skipped
    header = [str(c).strip() for c in rows[0][1]] if rows else []
    if "file_name" not in header or "split" not in header:
        raise InputError(f"{path}: needs columns file_name,split; the columns are {', '.join(header) or 'none'}")
    name_column, split_column = header.index("file_name"), header.index("split")
    for row_number, row in rows[1:]:
        name = unescape_formula(row[name_column].strip()) if name_column < len(row) else ""  # written escaped
        raw = row[split_column] if split_column < len(row) else ""
        if not name:
            raise InputError(f"{path}, row {row_number}: empty file_name")
        if raw.strip().lower() not in SPLITS:
            raise InputError(f"{path}, row {row_number}: split {raw!r} is not one of {', '.join(SPLITS)}")
        given.append(((name,), raw.strip().lower(), f"{path}, row {row_number}"))
    return given


def _read_split_table(path: Path, split: str) -> Given:
    """The image names of one CSV of a split folder (IPCE's ``train.csv``, ``val.csv``), all in ``split``."""
    rows = read_csv_rows(path)
    if not rows:
        raise InputError(f"{path} is empty: expected a header row with a name column ({', '.join(NAME_COLUMNS)})")
    (_, header), body = rows[0], rows[1:]
    columns = {str(c).strip().lower(): i for i, c in reversed(list(enumerate(header)))}
    name_column = next((columns[c] for c in NAME_COLUMNS if c in columns), None)
    if name_column is None:
        raise InputError(f"{path}: no image name column (one of {', '.join(NAME_COLUMNS)}); the columns are "
                         f"{', '.join(map(str, header))}")
    prefix_column = columns.get(PREFIX_COLUMN)
    given: Given = []
    for number, row in body:
        name = row[name_column].strip().replace("\\", "/") if name_column < len(row) else ""
        if not name:
            raise InputError(f"{path}, row {number}: empty {header[name_column]}")
        prefix = row[prefix_column].strip() if prefix_column is not None and prefix_column < len(row) else ""
        given.append(((name, f"{prefix}/{name}") if prefix else (name,), split, f"{path}, row {number}"))
    return given


def _read_split_folder(path: Path) -> Given:
    """A split folder in IPCE's layout: train.csv + test.csv, or train.csv + val.csv read as the test set."""
    files = {split: path / f"{split}.csv" for split in SPLITS if (path / f"{split}.csv").is_file()}
    if "train" not in files or not ({"val", "test"} & set(files)):
        raise MissingFile(f"split folder {path} needs train.csv and test.csv (or val.csv, read as the test "
                                f"set); it holds {', '.join(sorted(p.name for p in path.iterdir())) or 'nothing'}")
    if "test" not in files:
        files["test"] = files.pop("val")
    return [entry for split, file in files.items() for entry in _read_split_table(file, split)]


def escapes_root(name: str) -> bool:
    """Whether a sample name points outside the data root: absolute, or climbing out with ``..``."""
    parts = PurePosixPath(name.replace("\\", "/")).parts
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts


def _published_slips(given: Given) -> Given:
    """A split folder's rows as its authors meant them: a name listed twice in one part read once, a name in
    both train and test (or val) taken out of train; one warning names each."""
    parts: dict[str, dict[str, str]] = {}  # name -> {split: where first listed}
    repeated, in_both = [], []
    for candidates, split, where in given:
        seen = parts.setdefault(candidates[-1], {})
        if split in seen:
            repeated.append(f"{candidates[-1]} ({where}, first at {seen[split]})")
        seen.setdefault(split, where)
    kept, done = [], set()
    for candidates, split, where in given:
        name = candidates[-1]
        splits = parts[name]
        if (name, split) in done or (split == "train" and len(splits) > 1 and len(splits.keys() - {"train"}) == 1):
            continue
        done.add((name, split))
        kept.append((candidates, split, where))
    for name, splits in parts.items():
        if "train" in splits and len(splits) == 2:
            other = next(s for s in splits if s != "train")
            in_both.append(f"{name} ({splits['train']} and {splits[other]})")
    if repeated:
        warnings.warn(f"{len(repeated)} name(s) listed twice in one part, read once: "
                      f"{first_and_more(repeated, 5, '; ')}", stacklevel=3)
    if in_both:
        warnings.warn(f"{len(in_both)} name(s) listed in train and in the evaluation part, taken out of train: "
                      f"{first_and_more(in_both, 5, '; ')}", stacklevel=3)
    return kept


def read_splits(path: Path, names: list[str], left_out: frozenset[str] | set[str] = frozenset()) -> list[str]:
    """The assignment of ``names`` that a split file or folder gives (see the module docstring; val may be
    absent); every error names the file and row. Names in ``left_out`` (samples the dataset left out on
    purpose) are passed over."""
    path = Path(path).expanduser()
    if path.is_dir():
        given = _published_slips(_read_split_folder(path))
    elif path.is_file():
        given = _read_split_csv(path)
    else:
        raise MissingFile(f"splits file {path} not found (a CSV file_name,split or a folder with train.csv "
                                f"and test.csv or val.csv)")
    known = set(names)
    assigned: dict[str, tuple[str, str]] = {}
    unknown = []
    for candidates, split, where in given:
        name = next((c for c in candidates if c in known), None)
        if name is None and any(c in left_out for c in candidates):
            continue
        if name is None and any(escapes_root(c) for c in candidates):
            raise InputError(f"{where}: {candidates[-1]} points outside the data root; a split file names the "
                             f"dataset's samples, like {', '.join(names[:2])}")
        if name is None:
            unknown.append(candidates[-1])
        elif name in assigned:
            raise InputError(f"{where}: {name} is listed twice (first at {assigned[name][1]})")
        else:
            assigned[name] = (split, where)
    if unknown:
        raise InputError(f"{path}: {len(unknown)} name(s) are not samples of this dataset, e.g. "
                         f"{', '.join(unknown[:5])}; its samples are named like {', '.join(names[:2])}")
    unlisted = [name for name in names if name not in assigned]
    if unlisted:
        raise InputError(f"{path}: {len(unlisted)} of {len(names)} samples have no split, e.g. "
                         f"{', '.join(unlisted[:5])}")
    return [assigned[name][0] for name in names]


def shared_prompts(assignment: list[str], prompts: list[str | None]) -> set | None:
    """The prompts found in both train and test; None when a sample has no prompt."""
    if any(p is None or not str(p).strip() for p in prompts):
        return None
    return {p for p, s in zip(prompts, assignment) if s == "train"} & {p for p, s in zip(prompts, assignment)
                                                                       if s == "test"}


def predefined_split(path: Path, records: list[Record], val_size: float, seed: int,
                     by_prompt: bool = False, left_out: frozenset[str] = frozenset()) -> list[str]:
    """The split a file or folder gives; without val, val is drawn from train as the test set was: by prompt
    when train and test share no prompt (always with ``by_prompt``), at random otherwise."""
    assignment = read_splits(path, [r.file_name for r in records], left_out)
    if "val" in assignment or val_size <= 0:
        return assignment
    prompts = [r.prompt for r in records]
    shared = shared_prompts(assignment, prompts)
    if by_prompt:
        if shared is None:
            raise InputError(f"split=prompt draws val by prompt, but some samples of {path} have no prompt")
        if shared:
            warnings.warn(f"{path}: train and test share {len(shared)} prompt(s), so the test set is not "
                          f"prompt-disjoint; val is drawn by prompt all the same", stacklevel=2)
        return _draw_val_by_prompt(assignment, prompts, val_size, seed)
    if shared is not None and not shared:
        return _draw_val_by_prompt(assignment, prompts, val_size, seed)
    return _draw_val(assignment, val_size, seed)


def assign(protocol: str, records: list[Record], *, test_size: float, val_size: float, seed: int,
           folds: int = 5, fold: int = 0, splits_file: str | None = None,
           annotation_order: list[str] | None = None, left_out: frozenset[str] = frozenset()) -> list[str]:
    """The split of every record under one protocol (see the module docstring)."""
    names = [r.file_name for r in records]
    if protocol == "random":
        return random_split(len(records), test_size, val_size, seed)
    if protocol == "prompt" and splits_file:
        return predefined_split(Path(splits_file), records, val_size, seed, by_prompt=True, left_out=left_out)
    if protocol == "prompt":
        return prompt_split([r.prompt for r in records], test_size, val_size, seed)
    if protocol == "kfold":
        return kfold_split(len(records), folds, fold, val_size, seed)
    if protocol == "predefined":
        if not splits_file:
            raise InputError("split=predefined needs splits_file: a CSV with columns file_name,split, or a split "
                             "folder (train.csv + test.csv or val.csv)")
        return predefined_split(Path(splits_file), records, val_size, seed, left_out=left_out)
    if protocol == "paper":
        return paper_split(annotation_order or names, names)
    raise InputError(f"unknown split protocol {protocol!r}; choose one of {', '.join(PROTOCOLS)}")


def write_splits(path: Path, records: list[Record], assignment: list[str]) -> None:
    """``file_name,split`` for every sample, written atomically; names safe to open in a spreadsheet."""
    with atomic_write(path, "w", newline="") as handle:
        writer = safe_writer(handle)
        writer.writerow(["file_name", "split"])
        writer.writerows((record.file_name, split) for record, split in zip(records, assignment))


SPLIT_ARGS = ("split", "seed", "test_size", "val_size", "folds", "fold", "target")


def split_summary(datamodule) -> dict:
    """Protocol arguments and sizes of a datamodule's split (whatever of them it has), as plain values."""
    summary = {name: getattr(datamodule, name) for name in SPLIT_ARGS if hasattr(datamodule, name)}
    assignment = getattr(datamodule, "assignment", None)
    if assignment is not None:
        for split in SPLITS:
            summary[f"n_{split}"] = sum(1 for s in assignment if s == split)
    if isinstance(summary.get("target"), (list, tuple)):
        summary["target"] = ",".join(summary["target"])
    return {k: (v if isinstance(v, (int, float, str, bool)) or v is None else str(v)) for k, v in summary.items()}

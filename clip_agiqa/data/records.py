"""One sample record and the checks every annotation source goes through."""

from __future__ import annotations

import csv
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence, SupportsFloat, TypeVar, cast

import openpyxl
import torch

from ..errors import InputError
from ..files import regular_file
from ..text import first_and_more
from .images import file_problem


@dataclass
class Record:
    """An image with its MOS per target. ``file_name`` is relative to the dataset root and names the sample."""

    file_name: str
    path: Path
    targets: dict[str, float] = field(default_factory=dict)  # the datamodule puts its first selected target first
    prompt: str | None = None
    generator: str | None = None
    where: str = ""  # the annotation row it comes from ("<file>, row N"), for errors about it
    stds: dict[str, float] = field(default_factory=dict)  # the raters' spread per target, where the data gives it
    # named groups beyond the generator (task ...), for results per group
    groups: dict[str, str] = field(default_factory=dict)

    @property
    def mos(self) -> float:
        """The MOS of the first target; NaN for an image without one (a folder scored, not trained on)."""
        return next(iter(self.targets.values()), math.nan)


class MissingFile(InputError, FileNotFoundError):
    """A file or folder the user named (a root, an annotation file, an image) is not there."""


CSV_FIELD_LIMIT = csv.field_size_limit()  # 131,072 characters: a longer field is not an annotation


def listed(items: list[str], separator: str = ", ") -> str:
    """The first ``MAX_LISTED`` items, and how many more there are (bad rows named in one error message)."""
    return first_and_more(items, separator=separator)


def generator_of(name: str, from_end: bool = False) -> str:
    """The generator a benchmark's file name starts with: ``sd1.5_lowcorr_210.jpg`` -> ``sd1.5``; with
    ``from_end``, everything before the last ``_`` (``LCM_SDXL_0123.png`` -> ``LCM_SDXL``)."""
    return name.rsplit("_", 1)[0] if from_end else name.split("_", 1)[0]


def is_blank(row: Sequence) -> bool:
    """A row without any value (editors and spreadsheets leave such rows)."""
    return all(cell is None or not str(cell).strip() for cell in row)


RowT = TypeVar("RowT", bound=Sequence)


def numbered_rows(rows: Iterable[RowT]) -> list[tuple[int, RowT]]:
    """The non-blank rows with their row numbers in the file (1-based, as a spreadsheet shows them)."""
    return [(number, row) for number, row in enumerate(rows, start=1) if not is_blank(row)]


def read_csv_rows(path: Path, delimiter: str = ",") -> list[tuple[int, list[str]]]:
    r"""The non-blank rows of a CSV file (``delimiter`` "\t": TSV) with their row numbers (one row a line: no line
    breaks in fields).

    UTF-8 only (a BOM is fine): text in another encoding (Latin-1, Windows-1252) is refused in one line rather
    than guessed, since a wrong guess changes names; so is a field longer than ``CSV_FIELD_LIMIT``."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            return numbered_rows(reader)
        except UnicodeDecodeError:
            raise InputError(f"{path} is not UTF-8 text ({not_utf8(path)}): save it as UTF-8, e.g. "
                             "iconv -f latin1 -t utf-8") from None
        except csv.Error as error:
            problem = (f"a field is longer than {CSV_FIELD_LIMIT:,} characters" if "field limit" in str(error)
                       else str(error))
            raise InputError(f"{path}, row {reader.line_num}: {problem}; is it the annotation file?") from None


def not_utf8(path: Path) -> str:
    """Where a file stops being UTF-8: the first bad byte, its offset and line."""
    raw = Path(path).read_bytes()
    try:
        raw.decode("utf-8-sig")
        return "an invalid byte"
    except UnicodeDecodeError as error:
        start = error.start + (3 if raw.startswith(b"\xef\xbb\xbf") else 0)
        line = raw.count(b"\n", 0, start) + 1
        return f"byte 0x{raw[start:start + 1].hex()} at offset {start}, line {line}"


def read_xlsx_rows(path: Path) -> list[tuple[int, tuple]]:
    """The non-blank rows (values) of the first sheet of an .xlsx file with their row numbers, or a clear
    error naming the file."""
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises several unrelated types for a damaged file
        raise InputError(f"cannot read spreadsheet {path}: {error}") from error
    try:  # read-only sheets give blank rows as rows of None, so positions are row numbers
        return numbered_rows(workbook.worksheets[0].iter_rows(values_only=True))
    finally:
        workbook.close()


MAX_ANNOTATION_BYTES = 1 << 30  # EvalMi-50K's spreadsheet is 2.4 MB; a larger file is not an annotation file


def iter_xlsx_rows(path: Path) -> Iterator[tuple[int, tuple]]:
    """The non-blank rows (values) of the first sheet of an .xlsx file with their row numbers, streamed (openpyxl's
    read-only mode: memory does not grow with the rows); a damaged file is one error naming it."""
    regular_file(path, MAX_ANNOTATION_BYTES)
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as error:  # openpyxl raises several unrelated types for a damaged file
        raise InputError(f"cannot read spreadsheet {path}: {error}") from error
    try:
        for number, row in enumerate(workbook.worksheets[0].iter_rows(values_only=True), start=1):
            if not is_blank(row):
                yield number, row
    except InputError:
        raise
    except Exception as error:  # a damaged sheet part surfaces while iterating
        raise InputError(f"cannot read spreadsheet {path}: {error}") from error
    finally:
        workbook.close()


def table(rows: Sequence[tuple[int, Sequence]], required: list[str], source: str) -> list[tuple[int, dict]]:
    """The rows below the header row (the first non-blank one) as {column: value}, with their row
    numbers; header names are stripped of spaces and must include ``required``."""
    if not rows:
        raise InputError(f"{source} is empty: expected a header row with the columns {', '.join(required)}")
    (_, header), body = rows[0], rows[1:]
    columns: dict[str, int] = {}
    for position, name in enumerate(header):
        columns.setdefault(str(name).strip() if name is not None else "", position)
    require_columns(list(columns), required, source)
    if not body:
        raise InputError(f"{source}: no rows below the header")
    return [(number, {name: row[position] if position < len(row) else None for name, position in columns.items()})
            for number, row in body]


def column(rows: list[tuple[int, dict]], name: str) -> list[tuple[int, object]]:
    """(row number, value) of one column of ``table``'s rows."""
    return [(number, row[name]) for number, row in rows]


def mos_problem(value) -> str | None:
    """How a value that is not a usable MOS (a finite number) reads in an error, or None."""
    if value is None or not str(value).strip():
        return "empty"
    try:
        return None if math.isfinite(float(value)) else repr(value)
    except (TypeError, ValueError):
        return repr(value)


def parse_mos(values: list[tuple[int, object]], source: str, column: str) -> list[float]:
    """(row, value) pairs -> finite float MOS, or one error that names every bad row (up to a limit)."""
    problems = [f"row {row} ({problem})" for row, value in values if (problem := mos_problem(value))]
    if problems:
        raise InputError(f"{source}: {column} must be a finite number; {len(problems)} row(s) are not: "
                         f"{listed(problems)}")
    return [float(cast(SupportsFloat, value)) for _, value in values]  # each one passed mos_problem's float()


def parse_names(values: list[tuple[int, object]], source: str, column: str) -> list[str]:
    """(row, value) pairs -> stripped names, or one error that names every row without one."""
    names = [str(value).strip() if value is not None else "" for _, value in values]
    empty = [str(row) for (row, _), name in zip(values, names) if not name]
    if empty:
        raise InputError(f"{source}: {len(empty)} row(s) with an empty {column}: rows {listed(empty)}")
    return names


def parse_targets(rows: list[tuple[int, dict]], columns: list[str], source: str) -> dict[str, list[float]]:
    """{column: finite float MOS} of ``table``'s rows for each column, or one error naming every bad row of
    every column (up to a limit each)."""
    values, problems = {}, []
    for name in columns:
        try:
            values[name] = parse_mos(column(rows, name), source, name)
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise InputError("; ".join(problems))
    return values


def parse_stds(rows: list[tuple[int, dict]], columns: dict[str, str], source: str) -> dict[str, list[float]]:
    """{target: raters' std per row} of the ``columns`` (target -> std column) the table has; an empty cell is NaN
    (not given), anything else must be a finite number of at least 0 (one error names the bad rows)."""
    found = {}
    for target, name in columns.items():
        if not rows or name not in rows[0][1]:
            continue
        values, problems = [], []
        for row, value in column(rows, name):
            text = "" if value is None else str(value).strip()
            number = float("nan") if not text else _float_or_none(text)
            if number is None or (text and not (math.isfinite(number) and number >= 0)):
                problems.append(f"row {row} ({value!r})")
            values.append(number)
        if problems:
            raise InputError(f"{source}: {name} must be empty or a finite number of at least 0; "
                             f"{len(problems)} row(s) are not: {listed(problems)}")
        found[target] = values
    return found


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def selected_targets(target, valid: Iterable[str] | None, dataset: str) -> list[str]:
    """``target`` (one name or a list) as a list of names, each once and (when ``valid`` is given) one of
    ``valid``; otherwise an error that names the dataset's valid targets."""
    names = [target] if isinstance(target, str) else list(target or [])
    if not names or len(set(names)) != len(names):
        raise InputError(f"{dataset} target must name one target or a list of distinct ones, got {target!r}")
    unknown = [name for name in names if valid is not None and name not in valid]
    if unknown:
        raise InputError(f"{dataset} target must be one of {', '.join(valid)} (or a list of them), got "
                         f"{', '.join(map(repr, unknown))}")
    return names


def require_columns(columns, required: list[str], source: str) -> None:
    missing = [c for c in required if c not in columns]
    if missing:
        raise InputError(f"{source}: missing column(s) {', '.join(missing)}; the columns are {', '.join(columns)}")


def check_records(records: list[Record], source: str) -> None:
    """No empty set, no duplicated names, every image present (all missing names reported at once)."""
    if not records:
        raise InputError(f"{source}: no samples")
    duplicated = [name for name, count in Counter(r.file_name for r in records).items() if count > 1]
    if duplicated:
        raise InputError(f"{source}: duplicated file name(s) {first_and_more(duplicated, 5)}")
    problems = [(r.file_name, file_problem(r.path)) for r in records if not r.path.is_file()]
    missing = [name for name, problem in problems if problem == "not found"]
    if missing:
        raise MissingFile(f"{source}: {len(missing)} of {len(records)} image(s) not found under "
                          f"{records[0].path.parent}, e.g. {first_and_more(missing, 5)}")
    special = [f"{name} ({problem})" for name, problem in problems if problem is not None]
    if special:  # a FIFO, device or folder named as an image: never opened (a FIFO would block)
        raise InputError(f"{source}: {len(special)} of {len(records)} image(s) cannot be read: "
                         f"{first_and_more(special, 5, '; ')}")


def find_image_folder(root: Path, names: list[str], layout: str) -> Path:
    """The folder that holds the named images: root itself, or the one sub-folder of root where they sit
    (archives often unpack into one folder). ``layout`` describes the expected layout for the error."""
    probe = [n for n in names[:20] if n]
    if not root.is_dir():
        raise MissingFile(f"dataset folder {root} not found; expected {layout}")
    if any((root / n).is_file() for n in probe):
        return root
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if any((folder / n).is_file() for n in probe):
            return folder
    return root  # check_records then reports every missing image at once


def duplicated_rows(names: list[str], rows: list[int]) -> dict[str, list[int]]:
    """Every name listed more than once, with the (file) rows where it appears."""
    found: dict[str, list[int]] = {}
    for name, row in zip(names, rows):
        found.setdefault(name, []).append(row)
    return {name: where for name, where in found.items() if len(where) > 1}


def require_unique(names: list[str], source: str, rows: list[int]) -> None:
    """A clear error naming the file and the rows of every duplicated name (up to a limit)."""
    duplicated = duplicated_rows(names, rows)
    if duplicated:
        shown = [f"{name} at rows {', '.join(map(str, where))}" for name, where in duplicated.items()]
        raise InputError(f"{source}: {len(duplicated)} duplicated name(s): {listed(shown, '; ')}")


def outside_root(records: list[Record], root: Path) -> list[Record]:
    """The records whose image resolves outside root: ``../`` names, absolute names, symlinks leading out.

    Each folder (as written, ``..`` unresolved) is resolved once, not each file: resolving costs a system call per
    level of the path, which over tens of thousands of images in a few folders took seconds. A file is resolved
    itself only where it is a link (or its name is not a plain name)."""
    inside = Path(root).resolve()
    folder_inside: dict[str, bool] = {}

    def resolves_inside(path: str) -> bool:
        folder, name = os.path.split(path)
        if name in ("", ".", "..") or os.path.islink(path):
            return Path(path).resolve().is_relative_to(inside)
        if folder not in folder_inside:
            folder_inside[folder] = Path(folder or ".").resolve().is_relative_to(inside)
        return folder_inside[folder]

    return [r for r in records if not resolves_inside(str(r.path))]


def require_inside_root(records: list[Record], root: Path) -> None:
    """One line naming the first record (by its annotation row) whose image lies outside root, and the count."""
    outside = outside_root(records, root)
    if outside:
        first = outside[0]
        raise InputError(f"{first.where or root}: {first.file_name} resolves outside the data root {root}"
                         + (f" (and {len(outside) - 1} more)" if len(outside) > 1 else "")
                         + "; a shared folder must not reach other files. If intended: --data.allow_outside_root true")


def target_value(record: Record, name: str) -> float:
    """A record's value of one target (its first target when it has no value of that name)."""
    return record.targets.get(name, record.mos)


def target_tensor(record: Record, targets: list[str] | None) -> torch.Tensor:
    """The record's MOS: a scalar for one target, one value per target (in order) for several."""
    if not targets or len(targets) == 1:
        return torch.tensor(target_value(record, targets[0]) if targets else record.mos, dtype=torch.float32)
    return torch.tensor([target_value(record, name) for name in targets], dtype=torch.float32)


def std_tensor(record: Record, targets: list[str] | None) -> torch.Tensor:
    """The raters' std of the record's MOS, shaped as ``target_tensor``; NaN where the data gives none."""
    names = targets or ["mos"]
    values = [record.stds.get(name, float("nan")) for name in names]
    return torch.tensor(values[0] if len(names) == 1 else values, dtype=torch.float32)

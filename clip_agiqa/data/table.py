"""Any dataset described as data: a YAML description of an annotation file (CSV/TSV, JSON, JSON lines, XLSX or
parquet) says where each sample's image, prompt, targets, raters' std and groups are, and the MOS scale; no code.

A description (``experiments/datasets/*.yaml`` ship some)::

    name: AGIQA-3K                      # in messages
    file: data.csv                      # the annotation file, relative to the root
    format: csv                         # csv, tsv, json (a list of objects), jsonl, xlsx, parquet; default: the suffix
    header: [name, prompt, mos]         # only for a CSV/TSV without a header row: its columns, in order
    image: name                         # the column holding the image's path (relative to the image folder)
    image_template: "images/{}"         # optional: the path made from the column's value ({} is the value)
    image_folder: ""                    # optional: where the images are under the root; default: the root or
                                        # the one sub-folder that holds them
    prompt: prompt                      # optional: the generation prompt's column
    targets:                            # target name -> column; the first is the default target
      quality: mos_quality
      overall: {column: total_score, raters: true}   # a list of the raters' scores: their mean, and their std
    stds: {quality: std_quality}        # optional: target -> the column of the raters' std (read where present)
    raters_std: sample                  # std of a raters' list: sample (n - 1, the default) or population (n)
    groups:                             # optional: results per group; "generator" fills the record's generator
      generator: {column: name, pattern: "^([^_]+)_"}   # the regex's first group of the column's value
      task: type
    scale: [0, 5]                       # optional: the fixed MOS scale of every target; default: measured on train
    scales: {task_answer: [0, 1]}       # optional: a fixed scale per target, where they differ

Columns of JSON items may be dotted paths into nested objects (``scores.overall``). Every file is read as
hostile: regular files of bounded size only, and every missing or mistyped column is one line naming the file
(and the description) and the column.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import yaml

from ..errors import InputError
from ..files import read_bytes, regular_file
from ..text import did_you_mean
from .base import MOSDataModule
from .readers import Reader
from .records import (
    MAX_ANNOTATION_BYTES,
    MissingFile,
    Record,
    find_image_folder,
    iter_xlsx_rows,
    listed,
    mos_problem,
    read_csv_rows,
    require_unique,
    selected_targets,
    table,
)

MAX_DESCRIPTION_BYTES = 1 << 20
FORMATS = {".csv": "csv", ".tsv": "tsv", ".json": "json", ".jsonl": "jsonl", ".xlsx": "xlsx", ".parquet": "parquet"}
KEYS = ("name", "file", "format", "header", "image", "image_template", "image_folder", "prompt", "targets", "stds",
        "raters_std", "groups", "scale", "scales", "source")
REQUIRED = ("file", "image", "targets")
RATERS_STD = {"sample": 1, "population": 0}  # ddof
MAX_PROBLEMS = 20  # bad cells kept for the error; the rest are counted

Row = tuple[int, str, dict]  # (row or item number, "file, row N", values by column)


@dataclass(frozen=True)
class TargetColumn:
    """Where one target is: a column of MOS, or (``raters``) a column of each rater's score."""

    column: str
    raters: bool = False


@dataclass(frozen=True)
class GroupColumn:
    """Where one group is: a column, optionally the first group of a regex over its value."""

    column: str
    pattern: re.Pattern | None = None


@dataclass
class TableDescription:
    """A dataset's annotation file described as data (see the module docstring)."""

    file: str
    image: str
    targets: dict[str, TargetColumn]
    source: str = "description"  # where the description came from, for errors about it
    name: str = "table"
    format: str = ""
    header: list[str] | None = None
    image_template: str = "{}"
    image_folder: str | None = None
    prompt: str | None = None
    stds: dict[str, str] = field(default_factory=dict)
    raters_std: str = "sample"
    groups: dict[str, GroupColumn] = field(default_factory=dict)
    scale: tuple[float, float] | None = None
    scales: dict[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | Path) -> "TableDescription":
        """A description from a YAML file (a regular file of at most 1 MB)."""
        path = Path(path).expanduser()
        try:
            content = yaml.safe_load(read_bytes(path, MAX_DESCRIPTION_BYTES).decode("utf-8"))
        except (UnicodeDecodeError, yaml.YAMLError) as error:
            raise InputError(f"{path} is not a YAML description ({str(error).splitlines()[0][:120]})") from None
        return cls.from_mapping(content, str(path))

    @classmethod
    def from_mapping(cls, content: Any, source: str = "description") -> "TableDescription":
        if not isinstance(content, dict):
            raise InputError(f"{source}: a description is a mapping (file, image, targets, ...)")
        for key in content:
            if key not in KEYS:
                raise InputError(f"{source}: unknown key {key!r}{did_you_mean(str(key), KEYS)}; "
                                 f"the keys are {', '.join(KEYS)}")
        missing = [key for key in REQUIRED if not content.get(key)]
        if missing:
            raise InputError(f"{source}: {', '.join(missing)} must be given")
        content = {key: value for key, value in content.items() if key != "source"}
        described = cls(source=source, **{**content, "targets": target_columns(content["targets"], source),
                                          "groups": group_columns(content.get("groups") or {}, source),
                                          "stds": text_mapping(content.get("stds") or {}, "stds", source),
                                          "scale": scale(content.get("scale"), "scale", source),
                                          "scales": {name: scale(value, f"scales.{name}", source) for name, value in
                                                     mapping(content.get("scales") or {}, "scales", source).items()}})
        described.check(source)
        return described

    def check(self, source: str) -> None:
        """The description's own consistency: each problem one line naming the description and the key."""
        self.format = self.format or FORMATS.get(Path(self.file).suffix.lower(), "")
        if self.format not in FORMATS.values():
            raise InputError(f"{source}: format must be one of {', '.join(FORMATS.values())} (or a file with that "
                             f"suffix), got {self.format or self.file!r}")
        if self.image_template.count("{}") != 1:
            raise InputError(f"{source}: image_template must hold {{}} once (the image column's value), "
                             f"got {self.image_template!r}")
        if self.raters_std not in RATERS_STD:
            raise InputError(f"{source}: raters_std must be sample or population, got {self.raters_std!r}")
        for key, names in (("stds", self.stds), ("scales", self.scales)):
            unknown = [name for name in names if name not in self.targets]
            if unknown:
                raise InputError(f"{source}: {key} names {unknown[0]!r}, which is not a target "
                                 f"({', '.join(self.targets)})")
        if self.header is not None and (self.format not in ("csv", "tsv") or not isinstance(self.header, list)):
            raise InputError(f"{source}: header (a list of column names) is for a CSV/TSV without a header row")

    def columns(self) -> list[str]:
        """The columns a file must have: the std columns are read where the file has them (as the code readers do)."""
        named = [self.image, *(t.column for t in self.targets.values()), *(g.column for g in self.groups.values()),
                 *([self.prompt] if self.prompt else [])]
        return list(dict.fromkeys(named))


def mapping(value: Any, key: str, source: str) -> dict:
    if not isinstance(value, dict):
        raise InputError(f"{source}: {key} must be a mapping (name: column), got {value!r}")
    return value


def text_mapping(value: Any, key: str, source: str) -> dict[str, str]:
    found = mapping(value, key, source)
    bad = [name for name, column in found.items() if not isinstance(column, str) or not column]
    if bad:
        raise InputError(f"{source}: {key}.{bad[0]} must name a column")
    return {str(name): column for name, column in found.items()}


def target_columns(value: Any, source: str) -> dict[str, TargetColumn]:
    """``name: column`` or ``name: {column: ..., raters: true}`` for each target."""
    targets = {}
    for name, spec in mapping(value, "targets", source).items():
        if isinstance(spec, str) and spec:
            targets[str(name)] = TargetColumn(spec)
        elif isinstance(spec, dict) and isinstance(spec.get("column"), str) and set(spec) <= {"column", "raters"}:
            targets[str(name)] = TargetColumn(spec["column"], bool(spec.get("raters", False)))
        else:
            raise InputError(f"{source}: targets.{name} must be a column or {{column: ..., raters: true}}, "
                             f"got {spec!r}")
    return targets


def group_columns(value: Any, source: str) -> dict[str, GroupColumn]:
    """``name: column`` or ``name: {column: ..., pattern: regex with one group}`` for each group."""
    groups = {}
    for name, spec in mapping(value, "groups", source).items():
        if isinstance(spec, str) and spec:
            groups[str(name)] = GroupColumn(spec)
        elif isinstance(spec, dict) and isinstance(spec.get("column"), str) and set(spec) <= {"column", "pattern"}:
            groups[str(name)] = GroupColumn(spec["column"], compiled(spec.get("pattern"), f"groups.{name}", source))
        else:
            raise InputError(f"{source}: groups.{name} must be a column or {{column: ..., pattern: ...}}, got {spec!r}")
    return groups


def compiled(pattern: Any, key: str, source: str) -> re.Pattern | None:
    if pattern is None:
        return None
    try:
        regex = re.compile(str(pattern))
    except re.error as error:
        raise InputError(f"{source}: {key}.pattern is not a regular expression ({error})") from None
    if regex.groups < 1:
        raise InputError(f"{source}: {key}.pattern needs a group, e.g. ^([^_]+)_ (the group's text is the value)")
    return regex


def scale(value: Any, key: str, source: str) -> tuple[float, float] | None:
    if value is None:
        return None
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"{source}: {key} must be [low, high], got {value!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and high > low):
        raise InputError(f"{source}: {key} must be [low, high] with low < high, got {value!r}")
    return low, high


# --- reading the annotation file ----------------------------------------------------------------------------
def tabular_rows(path: Path, described: TableDescription) -> list[Row]:
    """The rows of a CSV/TSV/XLSX file as {column: value}; the columns read must all be there."""
    numbered: Sequence[tuple[int, Sequence]]
    if described.format == "xlsx":
        numbered = list(iter_xlsx_rows(path))
    else:
        numbered = read_csv_rows(path, "\t" if described.format == "tsv" else ",")
    if described.header is not None:
        numbered = [(0, described.header), *numbered]
    rows = table(numbered, described.columns(), str(path))  # one line names the missing columns
    return [(number, f"{path}, row {number}", values) for number, values in rows]


def json_rows(path: Path, described: TableDescription) -> list[Row]:
    """The items of a JSON list or the lines of a JSON-lines file; each must be an object."""
    try:
        text = read_bytes(path, MAX_ANNOTATION_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text (byte offset {error.start})") from None
    if described.format == "jsonl":
        items = [(number, f"{path}, line {number}", parsed(line, f"{path}, line {number}"))
                 for number, line in enumerate(text.splitlines(), start=1) if line.strip()]
    else:
        content = parsed(text, str(path))
        if not isinstance(content, list):
            raise InputError(f"{path}: expected a JSON list of objects, got {type(content).__name__}")
        items = [(number, f"{path}, item {number}", item) for number, item in enumerate(content, start=1)]
    bad = [where for _, where, item in items if not isinstance(item, dict)]
    if bad:
        raise InputError(f"{bad[0]}: not a JSON object ({len(bad)} such)")
    if not items:
        raise InputError(f"{path}: no items")
    return items


def parsed(text: str, where: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as error:
        raise InputError(f"{where}: not valid JSON ({str(error).splitlines()[0][:80]})") from None


def parquet_rows(path: Path, described: TableDescription) -> list[Row]:
    """The rows of a parquet file (pyarrow, which ``datasets`` installs), the columns read only."""
    import pyarrow.parquet as parquet

    try:
        schema = parquet.read_schema(path)
        wanted = list(dict.fromkeys(column.split(".")[0] if column not in schema.names else column
                                    for column in described.columns()))
        missing = [column for column in wanted if column not in schema.names]
        if missing:
            raise InputError(f"{path}: missing column(s) {', '.join(missing)}; the columns are "
                             f"{', '.join(schema.names)}")
        wanted += [column for column in described.stds.values() if column in schema.names and column not in wanted]
        values = parquet.read_table(path, columns=wanted).to_pylist()
    except InputError:
        raise
    except Exception as error:  # pyarrow raises several types for a damaged file
        raise InputError(f"cannot read parquet file {path}: {str(error)[:200]}") from None
    return [(number, f"{path}, row {number}", row) for number, row in enumerate(values, start=1)]


def read_rows(path: Path, described: TableDescription) -> list[Row]:
    if not path.exists():  # anything else there is refused by type below
        raise MissingFile(f"{path} not found: {described.source} describes {described.name} with the annotation file "
                          f"{described.file} in the root")
    regular_file(path, MAX_ANNOTATION_BYTES)
    if described.format in ("json", "jsonl"):
        return json_rows(path, described)
    if described.format == "parquet":
        return parquet_rows(path, described)
    return tabular_rows(path, described)


# --- one row -> one record's values ---------------------------------------------------------------------------
class Problems:
    """Bad cells gathered over every row, raised as one line naming the file and each column."""

    def __init__(self, path: Path, source: str):
        self.path, self.source, self.count = path, source, 0
        self.found: list[str] = []

    def add(self, where: str, column: str, what: str) -> None:
        self.count += 1
        if len(self.found) < MAX_PROBLEMS:
            self.found.append(f"{where.rsplit(', ', 1)[-1]}: {column} {what}")

    def raise_any(self) -> None:
        if self.count:
            raise InputError(f"{self.path} (described by {self.source}): {self.count} bad value(s): "
                             f"{listed(self.found, '; ')}")


MISSING = object()


def lookup(values: dict, column: str):
    """A column's value: the column itself, else a dotted path into nested objects; ``MISSING`` when absent."""
    if column in values:
        return values[column]
    found: Any = values
    for part in column.split("."):
        if not isinstance(found, dict) or part not in found:
            return MISSING
        found = found[part]
    return found


def raters_mean_std(value, ddof: int) -> tuple[float, float] | None:
    """The mean and std of a list of raters' scores (std NaN for too few raters), or None if it is not one."""
    if not isinstance(value, list) or not value or any(mos_problem(v) or isinstance(v, bool) for v in value):
        return None
    scores = [float(v) for v in value]
    mean = sum(scores) / len(scores)
    spread = (math.sqrt(sum((s - mean) ** 2 for s in scores) / (len(scores) - ddof))
              if len(scores) > ddof else math.nan)
    return mean, spread


def row_targets(where: str, values: dict, described: TableDescription, problems: Problems):
    """({target: MOS}, {target: raters' std}) of one row."""
    targets, stds = {}, {}
    for name, spec in described.targets.items():
        value = lookup(values, spec.column)
        if spec.raters:
            found = raters_mean_std(value, RATERS_STD[described.raters_std])
            if found is None:
                problems.add(where, spec.column, f"is {short(value)}, not a list of the raters' scores")
                continue
            targets[name], stds[name] = found
        elif (problem := "missing" if value is MISSING else mos_problem(value)) or isinstance(value, bool):
            problems.add(where, spec.column, f"is {problem or short(value)}, not a number")
        else:
            targets[name] = float(value)
    for name, column in described.stds.items():
        value = lookup(values, column)
        text = "" if value is None or value is MISSING else str(value).strip()
        number = math.nan if not text else (None if mos_problem(text) else float(text))
        if number is None or (text and number < 0):
            problems.add(where, column, f"is {short(value)}, not empty or a number of at least 0")
        else:
            stds[name] = number
    return targets, stds


def row_groups(where: str, values: dict, described: TableDescription, problems: Problems) -> dict[str, str]:
    groups = {}
    for name, spec in described.groups.items():
        value = lookup(values, spec.column)
        text = "" if value is None or value is MISSING else str(value).strip()
        matched = spec.pattern.search(text) if spec.pattern and text else None
        if not text or (spec.pattern and not matched):
            problems.add(where, spec.column, f"is {short(value)}" + (f", which {spec.pattern.pattern!r} does not match"
                                                                      if text else ""))
        else:
            groups[name] = matched.group(1) if matched else text
    return groups


def image_name(where: str, values: dict, described: TableDescription, problems: Problems) -> str | None:
    value = lookup(values, described.image)
    text = "" if value is None or value is MISSING else str(value).strip()
    if not text:
        problems.add(where, described.image, f"is {short(value)}, not an image path")
        return None
    return described.image_template.replace("{}", text).replace("\\", "/")


def short(value) -> str:
    return "missing" if value is MISSING else ("empty" if value is None or value == "" else repr(value)[:60])


# --- the reader and its datamodule ----------------------------------------------------------------------------
class TableReader(Reader):
    """Records from an annotation file described as data (a ``TableDescription`` or the path of its YAML).

    Args:
        description: the YAML file describing the annotation file, or a ``TableDescription``.
    """

    def __init__(self, description: str | Path | TableDescription):
        super().__init__()
        self.described = (description if isinstance(description, TableDescription)
                          else TableDescription.load(description))
        self.name = self.described.name
        self.targets = tuple(self.described.targets)
        self.mos_scale = self.described.scale

    def __repr__(self) -> str:
        return f"TableReader({self.described.source!r})"

    def scale_of(self, target: str) -> tuple[float, float] | None:
        return self.described.scales.get(target, self.described.scale)

    def read(self, root: Path) -> list[Record]:
        described = self.described
        path = root / described.file
        problems = Problems(path, described.source)
        parsed_rows = [(number, where, *self.row_values(where, values, problems))
                       for number, where, values in read_rows(path, described)]
        problems.raise_any()
        names = [name for _, _, name, *_ in parsed_rows]
        require_unique(names, str(path), [number for number, *_ in parsed_rows])
        folder = (root / described.image_folder if described.image_folder is not None
                  else find_image_folder(root, names, f"{described.name} as {described.source} describes it"))
        return [Record(name, folder / name, targets, prompt=prompt, generator=groups.pop("generator", None),
                       where=where, stds=stds, groups=groups)
                for _, where, name, targets, stds, prompt, groups in parsed_rows]

    def row_values(self, where: str, values: dict, problems: Problems):
        """(image name, targets, stds, prompt, groups) of one row; bad cells go to ``problems``."""
        described = self.described
        name = image_name(where, values, described, problems)
        targets, stds = row_targets(where, values, described, problems)
        prompt = lookup(values, described.prompt) if described.prompt else None
        text = "" if prompt is None or prompt is MISSING else str(prompt).strip()
        return name, targets, stds, text or None, row_groups(where, values, described, problems)


class TableData(MOSDataModule):
    """A dataset described as data: an annotation file (CSV/TSV, JSON, JSON lines, XLSX, parquet) and a YAML
    description of its columns (``experiments/datasets/*.yaml``; see ``clip_agiqa.data.table``).

    Args:
        description: the YAML description.
        target: one of its targets or a list of them; default: its first.
        (the rest: see ``MOSDataModule``)
    """

    def __init__(self, root: str, description: str, target: str | list[str] | None = None, **kwargs):
        reader = TableReader(description)
        target = reader.targets[0] if target is None else target
        selected_targets(target, reader.targets, reader.name)
        super().__init__(root, reader=reader, target=target, **kwargs)
        self.description = description


"""EvalMi-50K (LMM4LMM, ICCV 2025): 50,400 images of 24 generators for 2,100 prompts in 20 task types, rated
for perception and text-image correspondence, with a yes/no answer to each prompt's task question.

Download: the images from the authors' Hugging Face dataset page (``<generator>/<NNN>.png``) and, from their
code repository, ``AIGI2025_MOS_yn.xlsx`` (``ImageName, MOS1, MOS2, Y/N, YN_1 .. YN_4``; MOS1 = perception,
MOS2 = correspondence, both on 0-100; Y/N = 0/1) and ``prompt_tasks.jsonl`` (line NNN is prompt NNN:
``{"tag", "include", "prompt"}``, the tag being its task, base tasks sometimes joined with `` + ``). The root
holds the generator folders (or one sub-folder holding them) and the two files, unless ``annotations`` names
another folder for them.

Each record carries its prompt, its generator (the folder), its task (the tag as written) and its task answer
(``yes``/``no``) as groups; the answer is also the target ``task_answer`` (0/1). Ten prompt texts appear under
two prompt numbers each: a prompt split groups by text, so no text is in two parts.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator, Literal, cast

from ..errors import InputError
from ..files import read_bytes
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
    require_unique,
    selected_targets,
)

MOS_FILE = "AIGI2025_MOS_yn.xlsx"
PROMPTS_FILE = "prompt_tasks.jsonl"
NAME_COLUMN = "ImageName"
TARGET_COLUMNS = {"perception": "MOS1", "correspondence": "MOS2", "task_answer": "Y/N"}
SCALES = {"perception": (0.0, 100.0), "correspondence": (0.0, 100.0), "task_answer": (0.0, 1.0)}
ANSWERS = {0.0: "no", 1.0: "yes"}
IMAGE_NAME = re.compile(r"([^/\\]+)/(\d{3,})\.png")  # <generator>/<NNN>.png, NNN = the prompt's line (from 001)
MAX_PROBLEMS = 50  # bad rows kept for the error; the rest are counted
Target = Literal["perception", "correspondence", "task_answer"]
LAYOUT = (f"EvalMi-50K as downloaded: <generator>/<NNN>.png image folders, {MOS_FILE} "
          f"(ImageName, MOS1, MOS2, Y/N, ...) and {PROMPTS_FILE} beside them")


def read_prompt_tasks(path: Path) -> list[tuple[str, str]]:
    """(prompt, task tag) of every line of ``prompt_tasks.jsonl``; line N is prompt N. A bad line is one error
    naming the file and the line."""
    if not path.exists():  # anything else there is refused by type when read
        raise MissingFile(f"{path} not found: expected {LAYOUT}")
    try:
        text = read_bytes(path, MAX_ANNOTATION_BYTES).decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text (byte offset {error.start})") from None
    prompts = []
    for number, line in enumerate(text.splitlines(), start=1):
        try:
            item = json.loads(line)
        except (ValueError, RecursionError) as error:
            raise InputError(f"{path}, line {number}: not a JSON object ({str(error)[:80]})") from None
        prompt = item.get("prompt") if isinstance(item, dict) else None
        tag = item.get("tag") if isinstance(item, dict) else None
        if not (isinstance(prompt, str) and prompt.strip() and isinstance(tag, str) and tag.strip()):
            raise InputError(f"{path}, line {number}: needs a non-empty string \"prompt\" and \"tag\"")
        prompts.append((prompt.strip(), tag.strip()))
    if not prompts:
        raise InputError(f"{path} is empty: expected one line per prompt")
    return prompts


def header_positions(header: tuple, path: Path) -> dict[str, int]:
    """Column name -> position of the spreadsheet's header row; the name and target columns must be there."""
    positions: dict[str, int] = {}
    for position, name in enumerate(header):
        positions.setdefault(str(name).strip() if name is not None else "", position)
    missing = [name for name in (NAME_COLUMN, *TARGET_COLUMNS.values()) if name not in positions]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; the columns are "
                         f"{', '.join(p for p in positions if p)}")
    return positions


def cell(row: tuple, position: int):
    return row[position] if position < len(row) else None


def row_problem(name, values: dict, prompts: int) -> str | None:
    """What is wrong with one spreadsheet row (its name and target values), or None."""
    matched = IMAGE_NAME.fullmatch(str(name or "").strip())
    if not matched:
        return f"{NAME_COLUMN} {name!r} is not <generator>/<NNN>.png"
    if not 1 <= int(matched.group(2)) <= prompts:
        return f"{name}: prompt {matched.group(2)} is not a line of {PROMPTS_FILE} (1-{prompts})"
    for target, value in values.items():
        problem = mos_problem(value)
        if problem:
            return f"{TARGET_COLUMNS[target]} is {problem}"
    if float(values["task_answer"]) not in ANSWERS:
        return f"Y/N is {values['task_answer']!r}, not 0 or 1"
    return None


class EvalMi50KReader(Reader):
    """``AIGI2025_MOS_yn.xlsx`` (streamed) + ``prompt_tasks.jsonl`` and the ``<generator>/<NNN>.png`` images.

    Args:
        annotations: the folder holding the two annotation files; None: the root.
    """

    name = "EvalMi50K"
    targets = tuple(TARGET_COLUMNS)
    mos_scale = SCALES["perception"]

    def __init__(self, annotations: str | Path | None = None):
        super().__init__()
        self.annotations = Path(annotations).expanduser() if annotations else None

    def __repr__(self) -> str:
        return f"EvalMi50KReader(annotations={self.annotations!r})"

    def scale_of(self, target: str) -> tuple[float, float] | None:
        return SCALES.get(target)

    def rows(self, path: Path, prompts: int) -> Iterator[tuple[int, str, dict[str, float]]]:
        """(row number, image name, {target: value}) of every spreadsheet row, streamed; every bad row is
        gathered into one error after the last row."""
        if not path.exists():  # anything else there is refused by type when read
            raise MissingFile(f"{path} not found: expected {LAYOUT}")
        rows = iter_xlsx_rows(path)
        first = next(rows, None)
        if first is None:
            raise InputError(f"{path} is empty: expected a header row {NAME_COLUMN}, MOS1, MOS2, Y/N")
        positions = header_positions(first[1], path)
        problems: list[str] = []
        bad = 0
        for number, row in rows:
            name = cell(row, positions[NAME_COLUMN])
            values = {target: cell(row, positions[column]) for target, column in TARGET_COLUMNS.items()}
            problem = row_problem(name, values, prompts)
            if problem:
                bad += 1
                if len(problems) < MAX_PROBLEMS:
                    problems.append(f"row {number} ({problem})")
                continue
            yield number, str(name).strip(), {target: float(value) for target, value in values.items()}
        if bad:
            raise InputError(f"{path}: {bad} bad row(s): {listed(problems, '; ')}")

    def read(self, root: Path) -> list[Record]:
        folder = self.annotations or root
        prompts = read_prompt_tasks(folder / PROMPTS_FILE)
        path = folder / MOS_FILE
        rows = list(self.rows(path, len(prompts)))
        if not rows:
            raise InputError(f"{path}: no rows below the header")
        names = [name for _, name, _ in rows]
        require_unique(names, str(path), [number for number, _, _ in rows])
        images = find_image_folder(root, names, LAYOUT)
        return [self.record(images, path, number, name, values, prompts) for number, name, values in rows]

    @staticmethod
    def record(images: Path, path: Path, number: int, name: str, values: dict[str, float],
               prompts: list[tuple[str, str]]) -> Record:
        generator, prompt_number = IMAGE_NAME.fullmatch(name).groups()
        prompt, task = prompts[int(prompt_number) - 1]
        return Record(name, images / name, values, prompt=prompt, generator=generator, where=f"{path}, row {number}",
                      groups={"task": task, "task_answer": ANSWERS[values["task_answer"]]})


class EvalMi50K(MOSDataModule):
    """EvalMi-50K.

    Args:
        target: ``perception`` (MOS1), ``correspondence`` (MOS2, text-image correspondence) or ``task_answer``
            (Y/N, 0/1: whether the image answers its prompt's task question), or a list of them
            (``[perception, correspondence]``: one model, one output each).
        annotations: the folder of ``AIGI2025_MOS_yn.xlsx`` and ``prompt_tasks.jsonl``; default: the root.
        (the rest: see ``MOSDataModule``)
    """

    def __init__(self, root: str, target: Target | list[Target] = "perception", annotations: str | None = None,
                 **kwargs):
        selected_targets(target, TARGET_COLUMNS, "EvalMi50K")
        # a list of Target is a list of str (mypy's list is invariant)
        super().__init__(root, reader=EvalMi50KReader(annotations), target=cast("str | list[str]", target), **kwargs)
        self.annotations = annotations

"""The readability check of a data root, run once per version of each file.

Every image's check (the cheap header check before training, or the full decode of ``skip_bad_images``) runs
in threads, and the files that passed are recorded in ``image_checks.json`` (absolute path -> size and
mtime) in the data root's cache folder. A later run checks again only files that are new or whose size or
mtime changed. The record is a hint, never trusted blindly: a damaged, oversized or odd one is ignored (all
files are checked again), and only passes are recorded, so a bad image is always re-examined. It is written
atomically (``clip_agiqa.files.atomic_write``); where the folder is read-only nothing is recorded.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

from ..files import atomic_write
from .images import header_problem, readable_image
from .records import Record

CHECKS_FILE = "image_checks.json"
FORMAT = 1
MAX_RECORD_BYTES = 64 * 2**20  # about 400,000 entries; anything larger is not ours


def decode_problem(path: Path) -> str | None:
    return None if readable_image(path) else "does not decode"


CHECKS: dict[str, Callable[[Path], str | None]] = {"header": header_problem, "decode": decode_problem}


def check_threads() -> int:
    """Threads for the checks: reading files waits on the disk more than on the CPU."""
    return min(16, 2 * (os.cpu_count() or 1))


def read_record(path: Path) -> dict[str, dict[str, list[int]]]:
    """{check: {absolute path: [size, mtime_ns]}} of a record file; {} for anything that is not a sane one."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_RECORD_BYTES:
            return {}
        content = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(content, dict) or content.get("format") != FORMAT or not isinstance(content.get("checks"), dict):
        return {}
    sane = {}
    for kind, entries in content["checks"].items():
        if kind in CHECKS and isinstance(entries, dict):
            sane[kind] = {key: stamp for key, stamp in entries.items()
                          if isinstance(stamp, list) and len(stamp) == 2 and all(type(v) is int for v in stamp)}
    return sane


def write_record(path: Path, checks: dict[str, dict[str, list[int]]]) -> None:
    try:
        with atomic_write(path) as handle:
            json.dump({"format": FORMAT, "checks": checks}, handle)
    except OSError:
        pass  # a read-only data folder: the next run checks again


def stamp(path: Path) -> list[int] | None:
    try:
        status = os.stat(path)
    except OSError:
        return None
    return [status.st_size, status.st_mtime_ns]


def image_problems(records: list[Record], kind: str, record_folder: Path | None) -> list[tuple[Record, str]]:
    """(record, problem) of every record whose image fails the ``kind`` check (``header`` or ``decode``), in
    order; files recorded as passed with the same size and mtime are not opened again."""
    check = CHECKS[kind]
    record_path = record_folder / CHECKS_FILE if record_folder is not None else None
    recorded = read_record(record_path) if record_path is not None else {}
    known = recorded.get(kind, {})

    def examine(record: Record) -> tuple[str, list[int] | None, str | None]:
        key, before = str(Path(record.path).absolute()), stamp(record.path)
        if before is not None and known.get(key) == before:
            return key, before, None
        return key, before, check(record.path)

    with ThreadPoolExecutor(check_threads()) as pool:
        results = list(pool.map(examine, records))
    passed = {key: before for key, before, problem in results if problem is None and before is not None}
    if record_path is not None and any(known.get(key) != value for key, value in passed.items()):
        checked = {key for key, _, _ in results}
        recorded[kind] = {**{k: v for k, v in known.items() if k not in checked}, **passed}
        write_record(record_path, recorded)
    return [(record, problem) for record, (_, _, problem) in zip(records, results) if problem is not None]

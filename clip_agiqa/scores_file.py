"""The CSV of predicted scores, ONE writer shared by ``predict``, ``clip-agiqa score`` and ``QualityScorer``; no
Lightning.

Columns: ``file_name``, ``prompt`` (when prompts were given), ``score`` for a one-target model or one column
per target (``quality``, ``align``, ...), and ``error``: empty, or why the image has no score (its score cells
are then empty): the loader's reason ("not found", "empty file", "not an image", "a FIFO (named pipe), not a
regular file", "1 x 100000 pixels: aspect ratio 100,000 exceeds the limit 50" ...) or "non-finite score".
Text cells are escaped against spreadsheet formulas (``clip_agiqa.csv_cells``).

Rows are written as they come into ``<output>.partial``, which is renamed into place when the last row is
written: a file named ``<output>`` is always complete. A killed run leaves the ``.partial``; ``resume``
continues it (the rows there are kept, not scored again).
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from pathlib import Path
from typing import Literal

from .csv_cells import safe_writer, unescape_formula
from .errors import InputError

SHOWN = 5  # file names in the warning; the rest are counted


def score_columns(targets: list[str] | None) -> list[str]:
    return ["score"] if not targets or len(targets) == 1 else list(targets)


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def check_output(path: Path) -> Path:
    """The CSV to write, refused in one line when it cannot be one (checked before any scoring)."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise InputError(f"--output {path} is a folder: give the CSV file to write, e.g. {path / 'scores.csv'}")
    if path.parent.exists() and not path.parent.is_dir():
        raise InputError(f"--output {path}: {path.parent} is not a folder")
    return path


class ScoreCSV:
    """``with ScoreCSV(path, targets, with_prompt) as table: table.write(name, prompt, scores, error)``.

    On leaving the block normally the ``.partial`` becomes ``path``; on an error or interrupt it stays.
    ``partial`` says what to do with one left by an earlier run: ``refuse`` it (one line that says how to go
    on), ``resume`` it (``done`` holds its file names, ``rows``/``unreadable`` count them) or ``replace`` it.
    """

    def __init__(self, path, targets: list[str] | None, with_prompt: bool,
                 partial: Literal["refuse", "resume", "replace"] = "refuse",
                 extra_columns: tuple[str, ...] | list[str] = ()):
        self.path = check_output(path)
        self.partial = partial_path(self.path)
        self.with_prompt = with_prompt
        # extra_columns (a model's <target>_std, <target>_percentile) follow the scores, written like them
        self.columns = ["file_name", *(["prompt"] if with_prompt else []), *score_columns(targets), *extra_columns,
                        "error"]
        self.done: set[str] = set()
        self.rows = self.unreadable = 0
        self.unreadable_names: list[str] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.partial.exists() and partial == "refuse":
                raise InputError(f"{self.partial} holds the rows of an interrupted run: add --resume (resume=True in "
                                 f"Python) to continue it, or delete it to start over")
            if self.partial.exists() and partial == "resume":
                self._read_partial()
                self.handle = open(self.partial, "a", newline="", encoding="utf-8")
            else:
                self.handle = open(self.partial, "w", newline="", encoding="utf-8")
                safe_writer(self.handle).writerow(self.columns)
        except OSError as error:
            raise InputError(f"cannot write {self.partial}: {error.strerror or error}") from error
        self.writer = safe_writer(self.handle)

    def _read_partial(self) -> None:
        """Take in the rows of an interrupted run; a last row cut by the kill is dropped (scored again)."""
        with open(self.partial, "rb") as raw:
            whole = raw.seek(0, os.SEEK_END) > 0 and raw.seek(-1, os.SEEK_END) >= 0 and raw.read(1) == b"\n"
        try:
            with open(self.partial, newline="", encoding="utf-8") as handle:
                rows = list(csv.reader(handle))
        except (UnicodeDecodeError, csv.Error) as error:
            raise InputError(f"{self.partial} cannot be read ({error}): delete it to start over") from error
        if not rows or rows[0] != self.columns:
            raise InputError(f"{self.partial}: its columns ({', '.join(rows[0]) if rows else 'none'}) are not the "
                             f"ones this run writes ({', '.join(self.columns)}): delete it to start over")
        body = rows[1:]
        if body and (not whole or len(body[-1]) != len(self.columns)):
            body = body[:-1]
            self._rewrite([rows[0], *body])
        for number, row in enumerate(body, start=2):
            if len(row) != len(self.columns):
                raise InputError(f"{self.partial}, row {number}: {len(row)} cells, expected {len(self.columns)}; "
                                 "delete it to start over")
            self._count(unescape_formula(row[0]), unescape_formula(row[-1]))

    def _rewrite(self, rows: list[list[str]]) -> None:
        temporary = self.partial.with_name(self.partial.name + ".tmp")
        with open(temporary, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)  # cells as read: already escaped
        os.replace(temporary, self.partial)

    def _count(self, name: str, error: str) -> None:
        self.done.add(name)
        self.rows += 1
        if error:
            self.unreadable += 1
            if len(self.unreadable_names) < SHOWN:
                self.unreadable_names.append(name)

    def write(self, name: str, prompt: str | None, scores, error: str = "") -> None:
        """One row: ``scores`` is a float or one per target, or None when ``error`` says why there is none. A
        non-finite score is written as no score with the error "non-finite score"."""
        values = [] if scores is None else list(scores) if isinstance(scores, (list, tuple)) else [scores]
        if not error and (not values or not all(math.isfinite(v) for v in values)):
            error = f"non-finite score ({', '.join(str(v) for v in values) or 'none'})"
        cells = [""] * (len(self.columns) - 2 - self.with_prompt) if error else [f"{v:.6f}" for v in values]
        try:
            self.writer.writerow([name, *([prompt or ""] if self.with_prompt else []), *cells, error])
        except OSError as failure:
            raise InputError(f"cannot write {self.partial}: {failure.strerror or failure}; the rows written so far "
                             "stay there (--resume continues)") from failure
        self._count(name, error)

    def flush(self) -> None:
        """Rows so far onto the disk's page cache: a killed run keeps them."""
        self.handle.flush()

    def finish(self) -> Path:
        try:
            self.handle.flush()
            os.fsync(self.handle.fileno())
            self.handle.close()
            os.replace(self.partial, self.path)
        except OSError as error:
            raise InputError(f"cannot write {self.path}: {error.strerror or error}; the rows are in "
                             f"{self.partial} (--resume continues)") from error
        return self.path

    def close(self) -> None:
        """Stop without renaming: the ``.partial`` stays for ``resume``."""
        if not self.handle.closed:
            self.handle.close()

    def __enter__(self) -> ScoreCSV:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.finish()
        else:
            self.close()

    def summary(self) -> str:
        """The one line both ``predict`` and ``score`` print, counting every row."""
        return f"wrote {self.rows} rows ({self.unreadable} unreadable) to {self.path}"

    def warn_unreadable(self) -> None:
        warn_unreadable(self.unreadable_names, self.unreadable, self.rows, self.path)


def warn_unreadable(names: list[str], count: int, total: int, path) -> None:
    """One warning that counts the rows without a score and names the first ones."""
    if count:
        more = f" and {count - len(names)} more" if count > len(names) else ""
        warnings.warn(f"{count} of {total} image(s) have no score in {path} (see its error column): "
                      f"{', '.join(names)}{more}", stacklevel=2)

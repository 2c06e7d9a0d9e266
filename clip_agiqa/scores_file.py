"""The CSV of predicted scores, ONE writer shared by ``predict``, ``clip-agiqa score`` and ``QualityScorer``; no
Lightning.

Columns: ``file_name``, ``prompt`` (when prompts were given), ``score`` for a one-target model or one column
per target (``quality``, ``align``, ...), and ``error``: empty, or why the image has no score (its score cells
are then empty): the loader's reason ("not found", "empty file", "not an image", "a FIFO (named pipe), not a
regular file", "1 x 100000 pixels: aspect ratio 100,000 exceeds the limit 50" ...) or "non-finite score".
Text cells are escaped against spreadsheet formulas (``clip_agiqa.csv_cells``).

Rows are written as they come into ``<output>.partial``, which is renamed into place when the last row is
written: a file named ``<output>`` is always complete, and an existing one is replaced only when asked
(``--overwrite``). While a run writes, ``<output>.lock`` is locked: a second run on the same output is refused in
one line (the lock goes with the process, however it ends). A killed run leaves the ``.partial``; ``resume``
continues it: its rows are read as anyone's file (bounded line by line, never whole), and a row is kept only if
it names one of this run's inputs once, with this run's prompt, its cells escaped as this writer escapes them,
and finite scores or an error; the other rows are dropped, counted in one warning, and their images scored
again.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import stat
import warnings
from pathlib import Path
from typing import Literal, Mapping, TextIO

from filelock import FileLock, Timeout

from .csv_cells import escape_formula, safe_writer, unescape_formula
from .errors import InputError
from .files import atomic_write

SHOWN = 5  # file names in the warning; the rest are counted
MAX_LINE_CHARS = 1 << 20  # one line of a .partial: a name, a prompt, scores and an error (a long prompt: a few KB)


def score_columns(targets: list[str] | None) -> list[str]:
    return ["score"] if not targets or len(targets) == 1 else list(targets)


def partial_path(path: Path) -> Path:
    return path.with_name(path.name + ".partial")


def lock_path(path: Path) -> Path:
    return path.with_name(path.name + ".lock")


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

    On leaving the block normally the ``.partial`` becomes ``path``; on an error or interrupt it stays (removed
    when this run wrote no row into a new one). ``partial`` says what to do with one left by an earlier run:
    ``refuse`` it (one line that says how to go on), ``resume`` it (``done`` holds the file names of its rows that
    pass the checks against ``inputs``, name -> the prompt this run writes or None; ``rows``/``unreadable`` count
    them) or ``replace`` it. An existing ``path`` is refused unless ``overwrite``. The output is locked from here
    to ``finish``/``close``.
    """

    def __init__(self, path, targets: list[str] | None, with_prompt: bool,
                 partial: Literal["refuse", "resume", "replace"] = "refuse",
                 extra_columns: tuple[str, ...] | list[str] = (),
                 inputs: Mapping[str, str | None] | None = None, overwrite: bool = False):
        self.path = check_output(path)
        self.partial = partial_path(self.path)
        self.with_prompt = with_prompt
        # extra_columns (a model's <target>_std, <target>_percentile) follow the scores, written like them
        self.columns = ["file_name", *(["prompt"] if with_prompt else []), *score_columns(targets), *extra_columns,
                        "error"]
        self.done: set[str] = set()
        self.rows = self.unreadable = self.written = 0
        self.unreadable_names: list[str] = []
        self.handle: TextIO | None = None  # the .partial, open from _open on
        self.started_partial = False  # this run made the .partial (not one it resumes)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise InputError(f"cannot write {self.path}: {error.strerror or error}") from error
        self.lock = self._lock()
        try:
            self._open(partial, inputs, overwrite)
        except BaseException:
            self._unlock()
            raise
        self.writer = safe_writer(self.handle)

    def _lock(self) -> FileLock:
        lock = FileLock(str(lock_path(self.path)), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise InputError(f"{self.path} is being written by another clip-agiqa run (its lock "
                             f"{lock_path(self.path)} is held): wait for it to end, or give another --output") from None
        except OSError as error:
            raise InputError(f"cannot lock {lock_path(self.path)}: {error.strerror or error}") from error
        return lock

    def _unlock(self) -> None:
        if self.lock is not None and self.lock.is_locked:
            with contextlib.suppress(OSError):
                lock_path(self.path).unlink()  # while held: a run waiting on the old file retries on a new one
            self.lock.release()

    def _open(self, partial: str, inputs: Mapping[str, str | None] | None, overwrite: bool) -> None:
        if os.path.lexists(self.path) and not overwrite:
            raise InputError(f"{self.path} exists: add --overwrite to replace it (overwrite=True in Python), or "
                             "give another --output")
        exists = os.path.lexists(self.partial)
        if exists and partial == "refuse":
            raise InputError(f"{self.partial} holds the rows of an interrupted run: add --resume (resume=True in "
                             f"Python) to continue it, or delete it to start over")
        try:
            if exists and partial == "resume":
                self._resume(inputs or {})
                self.handle = open(self.partial, "a", newline="", encoding="utf-8")
            else:
                if exists and not os.path.isfile(self.partial) or os.path.islink(self.partial):
                    os.unlink(self.partial)  # a link or special file planted in its place: replaced, not followed
                self.handle = open(self.partial, "w", newline="", encoding="utf-8")
                self.started_partial = True
                safe_writer(self.handle).writerow(self.columns)
        except OSError as error:
            raise InputError(f"cannot write {self.partial}: {error.strerror or error}") from error

    # --- resume: the .partial read as anyone's file ---------------------------------------------------------------
    def _resume(self, inputs: Mapping[str, str | None]) -> None:
        """Keep the rows of an interrupted run that pass the checks (see the module docstring); the .partial is
        rewritten with those only. A last row cut by the kill is dropped silently (scored again)."""
        try:
            info = os.stat(self.partial)
        except OSError as error:
            raise InputError(f"{self.partial} cannot be read ({error.strerror or error})") from None
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{self.partial} is not a regular file: delete it to start over")
        if info.st_size > (len(inputs) + 1) * MAX_LINE_CHARS:
            raise InputError(f"{self.partial} is {info.st_size:,} bytes, more than rows for {len(inputs)} image(s) "
                             "can be: delete it to start over")
        kept, dropped = [], []
        try:
            with open(self.partial, newline="", encoding="utf-8") as handle:
                reader = csv.reader(_bounded_lines(handle, self.partial))
                header = next(reader, None)
                if header != self.columns:
                    found = ", ".join(cell[:40] for cell in header or [])[:200] or "none"
                    raise InputError(f"{self.partial}: its columns ({found}) "
                                     f"are not the ones this run writes ({', '.join(self.columns)}): delete it to "
                                     "start over")
                rows = [row for row in reader if row]  # an empty line is no row: its image is not done
        except (UnicodeDecodeError, csv.Error) as error:
            raise InputError(f"{self.partial} cannot be read ({str(error)[:200]}): delete it to start over") from None
        whole = _ends_with_newline(self.partial)
        read = len(rows)
        if rows and not whole:
            rows = rows[:-1]  # cut by the kill
        for row in rows:
            problem = self._row_problem(row, inputs)
            if problem is None:
                kept.append(row)
                self._count(unescape_formula(row[0]), unescape_formula(row[-1]))
            else:
                dropped.append(problem)
        if dropped:
            more = f" and {len(dropped) - 3} more" if len(dropped) > 3 else ""
            warnings.warn(f"{self.partial}: dropped {len(dropped)} row(s) that this run would not have written "
                          f"({'; '.join(dropped[:3])}{more}); their images are scored again", stacklevel=4)
        if len(kept) != read or not whole:
            self._rewrite([self.columns, *kept])

    def _row_problem(self, row: list[str], inputs: Mapping[str, str | None]) -> str | None:
        """Why a row of the .partial cannot be kept, or None."""
        if len(row) != len(self.columns):
            return f"{len(row)} cells, expected {len(self.columns)}"
        if any(escape_formula(unescape_formula(cell)) != cell for cell in row):
            return "a cell not escaped as this writer escapes it"
        name = unescape_formula(row[0])
        shown = repr(name[:60])
        if name not in inputs:
            return f"{shown} is not one of this run's images"
        if name in self.done:
            return f"{shown} twice"
        if self.with_prompt and inputs[name] is not None and unescape_formula(row[1]) != inputs[name]:
            return f"{shown} with another prompt"
        values, error = row[1 + self.with_prompt: -1], row[-1]
        if error:
            return None if not any(values) else f"{shown} has scores and an error"
        try:
            finite = all(math.isfinite(float(v)) for v in values)
        except ValueError:
            finite = False
        return None if finite else f"{shown} has a score that is not a finite number"

    def _rewrite(self, rows: list[list[str]]) -> None:
        with atomic_write(self.partial, newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(rows)  # cells as read: already escaped

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
            raise self._write_failed(failure) from failure
        self.written += 1
        self._count(name, error)

    def _write_failed(self, failure: OSError) -> InputError:
        """The line for a failed write: what to run next (a .partial without rows is removed by ``close``)."""
        if self.rows == 0 and self.started_partial:
            then = "no row was written: run the same command again"
        else:
            then = (f"the {self.rows} row(s) so far stay in {self.partial}: add --resume to continue "
                    "(resume=True in Python)")
        return InputError(f"cannot write {self.partial}: {failure.strerror or failure}; {then}")

    def flush(self) -> None:
        """Rows so far onto the disk's page cache: a killed run keeps them."""
        try:
            self._opened().flush()
        except OSError as failure:
            raise self._write_failed(failure) from failure

    def finish(self) -> Path:
        try:
            try:
                handle = self._opened()
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
                os.replace(self.partial, self.path)
            except OSError as error:
                self.close()
                raise InputError(f"cannot write {self.path}: {error.strerror or error}; the rows are in "
                                 f"{self.partial}: add --resume to continue") from error
        finally:
            self._unlock()
        return self.path

    def _opened(self) -> TextIO:
        assert self.handle is not None, "__init__ opens the .partial or raises"
        return self.handle

    def close(self) -> None:
        """Stop without renaming: the ``.partial`` stays for ``resume`` (removed when it holds no row of this run
        and no earlier one: running the same command again then just works)."""
        with contextlib.suppress(OSError):
            if self.handle is not None and not self.handle.closed:
                self.handle.close()
        if self.started_partial and self.rows == 0:
            with contextlib.suppress(OSError):
                os.unlink(self.partial)
        self._unlock()

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


def _bounded_lines(handle, path: Path):
    """The lines of a text file, each read at most ``MAX_LINE_CHARS`` at a time: a longer line is refused after
    that much, never held whole."""
    while True:
        line = handle.readline(MAX_LINE_CHARS + 1)
        if not line:
            return
        if len(line) > MAX_LINE_CHARS:
            raise InputError(f"{path} has a line longer than {MAX_LINE_CHARS:,} characters: not rows this package "
                             "wrote; delete it to start over")
        yield line


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as raw:
        return raw.seek(0, os.SEEK_END) > 0 and raw.seek(-1, os.SEEK_END) >= 0 and raw.read(1) == b"\n"


def warn_unreadable(names: list[str], count: int, total: int, path) -> None:
    """One warning that counts the rows without a score and names the first ones."""
    if count:
        more = f" and {count - len(names)} more" if count > len(names) else ""
        warnings.warn(f"{count} of {total} image(s) have no score in {path} (see its error column): "
                      f"{', '.join(names)}{more}", stacklevel=2)

"""One run = one folder, and nothing in it lost: the run folder's lock, whole checkpoints, ``last.ckpt`` after
every epoch, ``metrics.csv`` without replayed steps, and a fit that stops cleanly on Ctrl-C or SIGTERM.

- ``RunLock``: a ``filelock`` lock on ``<run folder>/.clip-agiqa.lock`` held for the whole command, so two
  commands never write one folder at once (the lock goes with the process, however it ends).
- ``AtomicCheckpointIO``: every checkpoint is written beside its target and renamed into place, so a kill or a
  full disk leaves the previous file whole and no temporary file anywhere else.
- ``RunLogger``: ``metrics.csv`` and ``hparams.yaml`` in the run folder, each step once after a resume.

The checkpoint callbacks (``best.ckpt``, ``last.ckpt`` after every epoch) and the stop on Ctrl-C or SIGTERM are in
``callbacks/``.
"""

from __future__ import annotations

import contextlib
import csv
import os
import zipfile
from argparse import Namespace
from pathlib import Path

import torch
from filelock import FileLock, Timeout
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers.logger import Logger
from lightning.pytorch.utilities import rank_zero_only

from .errors import InputError
from .files import atomic_write
from .run_files import CONFIG_FILE, HPARAMS_FILE, LAST_FILE, LOCK_FILE, METRICS_FILE

ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6


def checkpoints_of(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.ckpt")) if folder.is_dir() else []


def check_run_folder_is_free(checkpoint_folder: Path, ckpt_path, run_folder: Path) -> None:
    """A fit writes into a folder holding checkpoints only when it resumes from one of them."""
    found = checkpoints_of(checkpoint_folder)
    if not found or ckpt_path == "last":
        return
    if ckpt_path is not None and Path(ckpt_path).resolve().parent == checkpoint_folder.resolve():
        return
    raise InputError(
        f"{checkpoint_folder} already holds the checkpoints of another run ({', '.join(found)}); "
        "a new fit would overwrite them. To resume that run: clip-agiqa fit --config "
        f"{run_folder / CONFIG_FILE} --ckpt_path last. To start a new run, choose another folder: "
        "--trainer.default_root_dir runs/<new name>.")


def resume_command(run_folder: Path) -> str:
    return f"clip-agiqa fit --config {run_folder / CONFIG_FILE} --ckpt_path last"


# --- checkpoints ------------------------------------------------------------------------------------------
def check_checkpoint_file(path: Path) -> None:
    """A missing, empty or truncated checkpoint in one line, before anything loads it (torch.save writes a zip
    archive whose index is at its end: a cut file has none)."""
    if not path.is_file():
        raise InputError(f"--ckpt_path {path}: no such file")
    with open(path, "rb") as handle:
        head = handle.read(len(ZIP_MAGIC))
    if not head:
        raise InputError(f"{path} is empty (a write that never finished?)")
    if head != ZIP_MAGIC:
        return  # an old (pre-zip) torch file: torch.load judges it
    try:
        with zipfile.ZipFile(path) as archive:
            archive.infolist()
    except (zipfile.BadZipFile, OSError) as error:
        raise InputError(f"{path} is damaged ({error}): use another checkpoint of the run "
                         "(e.g. best.ckpt), or start the run again in a new folder") from None


def resolve_last_checkpoint(checkpoint_folder: Path, run_folder: Path) -> Path:
    """``--ckpt_path last`` of a fit: the run's last.ckpt, refused in one line when missing or damaged (Lightning
    would silently start over from scratch)."""
    last = checkpoint_folder / LAST_FILE
    if not last.is_file():
        raise InputError(f"--ckpt_path last: {checkpoint_folder} holds no {LAST_FILE}, so there is nothing to resume "
                         f"in {run_folder}; leave out --ckpt_path to start the run")
    check_checkpoint_file(last)
    return last


def remove_unfinished_writes(checkpoint_folder: Path) -> list[Path]:
    """Temporary checkpoint files a killed process left beside their targets (the folder is locked: no other
    process is writing them)."""
    found = sorted(checkpoint_folder.glob(".*.ckpt.*.tmp")) if checkpoint_folder.is_dir() else []
    for path in found:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
    return found


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written beside their target and renamed into place: never a truncated ``best.ckpt``."""

    def save_checkpoint(self, checkpoint: dict, path, storage_options=None) -> None:
        if storage_options is not None or "://" in str(path):  # remote storage: Lightning's own way
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_write(path, "wb") as handle:
            torch.save(checkpoint, handle)

    def load_checkpoint(self, path, map_location=None, weights_only=None) -> dict:
        """Tensors and plain values only, on every torch (before 2.6 torch.load unpickles anything by default): a
        planted ``hpc_ckpt_*.ckpt`` or ``last.ckpt`` runs nothing even where the keyword check was skipped."""
        if "://" in str(path):  # remote storage: Lightning's own way, never unpickling by default either
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        return torch.load(path, map_location=map_location or "cpu", weights_only=True)


# --- metrics.csv after a resume ----------------------------------------------------------------------------
def drop_metric_rows_from(metrics_file: Path, step: int) -> int:
    """Removes the rows logged at ``step`` or later (those of the epoch a resume replays); returns how many.
    A row cut by a kill (no step) goes too."""
    if not metrics_file.is_file():
        return 0
    with open(metrics_file, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or "step" not in rows[0]:
        return 0
    column = rows[0].index("step")

    def kept(row: list[str]) -> bool:
        try:
            return len(row) == len(rows[0]) and int(float(row[column])) < step
        except ValueError:
            return False

    keep = [row for row in rows[1:] if kept(row)]
    dropped = len(rows) - 1 - len(keep)
    if dropped:
        with atomic_write(metrics_file, "w", newline="") as handle:
            csv.writer(handle).writerows([rows[0], *keep])
    return dropped


# --- the run folder's lock ---------------------------------------------------------------------------------
class RunLock:
    """An exclusive lock on a run folder for one command (``filelock``: an OS lock, so it goes with the process
    however it ends); a second command on the folder is refused in one line naming the holder's process. The lock
    file, and the folder when the command made it and wrote nothing there, go when the command ends."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_FILE
        self._lock: FileLock | None = None
        self._made_folder = self._made_file = False

    def acquire(self) -> RunLock:
        self._made_folder = not self.folder.exists()
        self._made_file = not self.path.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        holder = self._holder()  # read before trying: filelock before 4 empties the file on a failed try
        lock = FileLock(self.path)
        try:
            lock.acquire(timeout=0)
            if not self.path.is_file():  # locked a file its holder removed on ending (filelock before 4 allows it)
                lock.release()
                raise Timeout(str(self.path))
        except Timeout:
            self._remove_what_was_made()
            holder = holder or self._holder()
            raise InputError(f"{self.folder} is in use by another clip-agiqa command"
                             f"{f' (process {holder})' if holder else ''}: wait for it to end, or choose another "
                             "--trainer.default_root_dir") from None
        with contextlib.suppress(OSError), open(self.path, "w") as handle:
            handle.write(f"{os.getpid()}\n")  # what a refused command names
        self._lock = lock
        return self

    def _holder(self) -> str:
        try:
            return self.path.read_text()[:20].strip()
        except (OSError, UnicodeDecodeError):
            return ""

    def _remove_what_was_made(self) -> None:
        if self._made_folder:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty

    def release(self) -> None:
        if self._lock is None:
            return
        if self._made_file:
            # Removed while still held: a process that opened it a moment before then finds it gone and is refused
            # (on Windows the open file cannot be removed; filelock removes it there on release).
            with contextlib.suppress(OSError):
                self.path.unlink()
        self._lock.release()
        self._lock = None
        self._remove_what_was_made()


# --- metrics.csv and hparams.yaml --------------------------------------------------------------------------
class RunLogger(Logger):
    """The default logger: ``metrics.csv`` and ``hparams.yaml`` directly in the run folder (no version_N).

    Lightning's ``CSVLogger`` cannot serve here: it deletes the folder's ``metrics.csv`` when it starts (a resume
    or a test must extend the run's file) and rewrites the file in place when a column is added (a kill then
    loses it). Rows are kept in memory and appended on ``save``; a new column rewrites the file whole."""

    FLUSH_EVERY_N_STEPS = 100  # as CSVLogger

    def __init__(self, run_folder: str, keep_metrics: bool) -> None:
        super().__init__()
        self.run_folder = Path(run_folder)
        self.keep_metrics = keep_metrics
        self.hparams: dict = {}
        self.rows: list[dict] = []
        self.position: tuple[int, int] | None = None  # (epoch, step) given to the rows instead of the trainer's
        self.columns: list[str] | None = None  # those of metrics.csv on disk; None until first read

    @property
    def name(self) -> str:
        return ""

    @property
    def version(self) -> None:  # one run per folder: nothing to number (and no v_num in the progress bar)
        return None

    @property
    def save_dir(self) -> str:
        return str(self.run_folder)

    @property
    def log_dir(self) -> str:
        return str(self.run_folder)

    @property
    def metrics_file(self) -> Path:
        return self.run_folder / METRICS_FILE

    @rank_zero_only
    def log_hyperparams(self, params, *args, **kwargs) -> None:
        self.hparams.update(vars(params) if isinstance(params, Namespace) else dict(params or {}))
        path = self.run_folder / HPARAMS_FILE
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            save_hparams_to_yaml(str(partial), self.hparams)
            os.replace(partial, path)  # whole or not at all
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()  # a full disk leaves no half file behind
            raise

    @rank_zero_only
    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        row = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
        row["step"] = len(self.rows) if step is None else step
        if self.position is not None:
            row["epoch"], row["step"] = self.position
        self.rows.append(row)
        if step is not None and (step + 1) % self.FLUSH_EVERY_N_STEPS == 0:
            self.save()

    def _columns_on_disk(self) -> list[str]:
        if self.columns is None:
            if self.metrics_file.is_file() and not self.keep_metrics:
                self.metrics_file.unlink()  # a new run's file starts afresh
            self.columns = []
            if self.metrics_file.is_file():
                with open(self.metrics_file, newline="") as handle:
                    self.columns = next(csv.reader(handle), [])
        return self.columns

    @rank_zero_only
    def save(self) -> None:
        columns = self._columns_on_disk()
        if not self.rows:
            return
        added = sorted(set().union(*self.rows) - set(columns))
        if added or not self.metrics_file.is_file():
            columns = self.columns = sorted({*columns, *added})
            self._rewrite(columns)
        else:
            with open(self.metrics_file, "a", newline="") as handle:
                csv.DictWriter(handle, fieldnames=columns).writerows(self.rows)
        self.rows = []

    def _rewrite(self, columns: list[str]) -> None:
        """A new column rewrites the file: whole or not at all."""
        earlier = []
        if self.metrics_file.is_file():
            with open(self.metrics_file, newline="") as handle:
                earlier = list(csv.DictReader(handle))
        with atomic_write(self.metrics_file, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows([*earlier, *self.rows])

    @rank_zero_only
    def finalize(self, status: str) -> None:
        self.save()

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self.save()  # metrics.csv on disk up to the checkpoint: a resume after a kill then misses no row

    def forget_from(self, step: int) -> None:
        """Drops the rows logged at ``step`` or later: those of the epoch a resume trains again."""
        self.save()
        drop_metric_rows_from(self.metrics_file, step)

"""One run = one folder, and nothing in it lost: the run folder's lock, whole checkpoints, ``last.ckpt`` after
every epoch, ``metrics.csv`` without replayed steps, and a fit that stops cleanly on Ctrl-C or SIGTERM.

- ``RunLock``: an fcntl lock on ``<run folder>/.clip-agiqa.lock`` held for the whole command, so two commands
  never write one folder at once (the lock goes with the process, however it ends).
- ``AtomicCheckpointIO``: every checkpoint is written beside its target and renamed into place, so a kill or a
  full disk leaves the previous file whole and no temporary file anywhere else.
- ``RunCheckpoint``: Lightning's ``ModelCheckpoint`` writes ``last.ckpt`` only when ``best.ckpt`` improves;
  this one writes it after every epoch, so ``--ckpt_path last`` goes on from the last finished epoch.
- ``StopOnSignal``: the first Ctrl-C or SIGTERM lets the step in progress finish, writes ``last.ckpt`` and ends
  the fit with ``RunInterrupted`` (the console prints one line saying how to resume); a second Ctrl-C stops at once.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import fcntl
import os
import zipfile
from pathlib import Path
from typing import IO

import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.core.saving import save_hparams_to_yaml
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

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
        raise InputError(f"--ckpt_path last: {checkpoint_folder} holds no {LAST_FILE}, so there is nothing to resume in "
                         f"{run_folder}; leave out --ckpt_path to start the run")
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
    """An exclusive lock on a run folder for one command; a second command on the folder is refused in one line."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._handle: IO[str] | None = None
        self._made_folder = False

    def acquire(self) -> RunLock:
        self._made_folder = not self.folder.exists()
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = open(self.folder / LOCK_FILE, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            handle.seek(0)
            holder = handle.read().strip()
            handle.close()
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise InputError(f"{self.folder} is in use by another clip-agiqa command"
                             f"{f' (process {holder})' if holder else ''}: wait for it to end, or choose another "
                             "--trainer.default_root_dir") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        self._handle = handle
        return self

    def release(self) -> None:
        if self._handle is None:
            return
        lock_file = self.folder / LOCK_FILE
        with contextlib.suppress(OSError):
            if self._made_folder and [p.name for p in self.folder.iterdir()] == [LOCK_FILE]:
                lock_file.unlink()  # a command that failed before writing anything leaves no folder behind
                self.folder.rmdir()
        with contextlib.suppress(OSError):
            self._handle.close()  # closing drops the lock
        self._handle = None


# --- Ctrl-C and SIGTERM ------------------------------------------------------------------------------------




class _RunMetricsWriter(ExperimentWriter):
    """metrics.csv that a resumed run, or a later test of the run, extends instead of deleting."""

    def __init__(self, log_dir: str, keep_metrics: bool) -> None:
        self.keep_metrics = keep_metrics
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        if not self.keep_metrics:
            self._fs.rm_file(self.metrics_file_path)
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as handle:
            self.metrics_keys = next(csv.reader(handle), [])  # new rows keep the earlier columns

    def _rewrite_with_new_header(self, fieldnames: list[str]) -> None:
        """A new column rewrites the file: whole or not at all (Lightning's rewrite in place can lose it)."""
        with open(self.metrics_file_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
        with atomic_write(self.metrics_file_path, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=fieldnames)
            writer.writeheader()
            writer.writerows(rows)

    def log_hparams(self, params: dict) -> None:
        self.hparams.update(params)
        path = Path(self.log_dir) / HPARAMS_FILE
        partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_hparams_to_yaml(str(partial), self.hparams)
        os.replace(partial, path)  # whole or not at all



class RunLogger(CSVLogger):
    """The default logger: metrics.csv and hparams.yaml directly in the run folder (no version_N)."""

    _experiment: _RunMetricsWriter | None

    def __init__(self, run_folder: str, keep_metrics: bool) -> None:
        super().__init__(save_dir=run_folder, name="", version="")
        self.keep_metrics = keep_metrics

    @property
    def version(self) -> None:  # one run per folder: nothing to number (and no v_num in the progress bar)
        return None

    @property
    def log_dir(self) -> str:
        return self.save_dir

    @property
    @rank_zero_experiment
    def experiment(self) -> _RunMetricsWriter:
        if self._experiment is None:
            self._fs.makedirs(self.log_dir, exist_ok=True)
            self._experiment = _RunMetricsWriter(self.log_dir, self.keep_metrics)
        return self._experiment

    def after_save_checkpoint(self, checkpoint_callback) -> None:
        self.save()  # metrics.csv on disk up to the checkpoint: a resume after a kill then misses no row

    def forget_from(self, step: int) -> None:
        """Drops the rows logged at ``step`` or later: those of the epoch a resume trains again."""
        self.save()
        drop_metric_rows_from(Path(self.log_dir) / METRICS_FILE, step)

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
import signal
import threading
import zipfile
from pathlib import Path

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from .errors import InputError
from .files import atomic_write

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
LOCK_FILE = ".clip-agiqa.lock"
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
        f"{run_folder / 'config.yaml'} --ckpt_path last. To start a new run, choose another folder: "
        "--trainer.default_root_dir runs/<new name>.")


def resume_command(run_folder: Path) -> str:
    return f"clip-agiqa fit --config {run_folder / 'config.yaml'} --ckpt_path last"


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
    last = checkpoint_folder / LAST
    if not last.is_file():
        raise InputError(f"--ckpt_path last: {checkpoint_folder} holds no {LAST}, so there is nothing to resume in "
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


class RunCheckpoint(ModelCheckpoint):
    """``best.ckpt`` by the monitored metric as in Lightning, and ``last.ckpt`` after every epoch (Lightning's
    ``save_last`` writes it only when a top-k checkpoint was written, i.e. when the best improved)."""

    def on_validation_end(self, trainer, pl_module) -> None:
        due = self._last_is_due(trainer, on_train_epoch_end=False)
        super().on_validation_end(trainer, pl_module)
        self._save_last_if_missed(trainer, due)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        due = self._last_is_due(trainer, on_train_epoch_end=True)
        super().on_train_epoch_end(trainer, pl_module)
        self._save_last_if_missed(trainer, due)

    def _last_is_due(self, trainer, on_train_epoch_end: bool) -> bool:
        return (bool(self.save_last) and not self._should_skip_saving_checkpoint(trainer)
                and self._should_save_on_train_epoch_end(trainer) == on_train_epoch_end)

    def _save_last_if_missed(self, trainer, due: bool) -> None:
        if due and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


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
        self._handle = None
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
class RunInterrupted(BaseException):
    """A fit stopped by a signal after writing ``last.ckpt`` (a BaseException: no ``except Exception`` hides it)."""

    def __init__(self, signum: int, checkpoint: Path | None, epoch: int, step: int) -> None:
        self.signum, self.checkpoint, self.epoch, self.step = signum, checkpoint, epoch, step
        name = signal.Signals(signum).name
        saved = f"saved {checkpoint}" if checkpoint else "nothing saved"
        super().__init__(f"stopped by {name} in epoch {epoch} at step {step}; {saved}")


class StopOnSignal(Callback):
    """Ctrl-C / SIGTERM during a fit: the step in progress finishes, then ``last.ckpt`` is written (at the start
    of the next step, once every metric of the last one is logged) and ``RunInterrupted`` ends the fit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict = {}

    def _request(self, signum, frame) -> None:
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # the second Ctrl-C: stop now
        self.received = signum

    def _install(self, signum: int) -> None:
        if threading.current_thread() is threading.main_thread() and signum not in self._previous:
            self._previous[signum] = signal.signal(signum, self._request)

    def setup(self, trainer, pl_module, stage: str) -> None:
        # SIGINT before any data loader worker starts: forked workers then keep this handler instead of dying on
        # the terminal's Ctrl-C, which reaches the whole process group.
        if stage == "fit":
            self._install(signal.SIGINT)

    def on_train_start(self, trainer, pl_module) -> None:
        # SIGTERM after Lightning registered its own (which would end the fit only at the epoch's end, quietly);
        # Lightning puts back the one from before it at teardown.
        self._install(signal.SIGTERM)

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self._restore()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        requested = self.received is not None
        if trainer.world_size > 1:  # every rank stops at the same step
            requested = trainer.strategy.reduce_boolean_decision(requested, all=False)
        if not requested:
            return
        checkpoint = self._save_last(trainer)
        raise RunInterrupted(self.received or signal.SIGTERM, checkpoint, trainer.current_epoch, trainer.global_step)

    @staticmethod
    def _save_last(trainer) -> Path | None:
        callback = trainer.checkpoint_callback
        if not isinstance(callback, ModelCheckpoint) or not callback.dirpath:
            return None
        path = Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        callback.last_model_path = str(path)
        # Saved at a batch's start, when Lightning has counted the last step for the loggers already; on resuming
        # it counts once more (it expects saves at a batch's end): without this, metrics.csv would skip a step.
        loop = trainer.fit_loop.epoch_loop
        loop._batches_that_stepped -= 1
        try:
            trainer.save_checkpoint(str(path))
        finally:
            loop._batches_that_stepped += 1
        for logger in trainer.loggers:
            logger.save()  # metrics.csv up to this step
        return path

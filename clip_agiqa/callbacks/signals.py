"""Ctrl-C and SIGTERM during a fit: finish the step, write ``last.ckpt``, end with one line."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from lightning.pytorch import Callback

from ..runs import resume_command
from .checkpoints import LastCheckpoint


class RunInterrupted(BaseException):
    """A fit stopped by a signal after writing ``last.ckpt`` (a BaseException: no ``except Exception`` hides it)."""

    resume: str  # the command that resumes the run

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
        signum = self.received or signal.SIGTERM
        stopped = RunInterrupted(signum, checkpoint, trainer.current_epoch, trainer.global_step)
        stopped.resume = resume_command(Path(trainer.default_root_dir))  # the run folder
        raise stopped

    @staticmethod
    def _save_last(trainer) -> Path | None:
        path = next((c.path for c in trainer.checkpoint_callbacks if isinstance(c, LastCheckpoint) and c.path), None)
        if path is None:
            return None
        # Saved at a batch's start, when Lightning has counted the last step for the loggers already; on resuming
        # it counts once more (it expects saves at a batch's end): without this, metrics.csv would skip a step.
        # A private counter (no public way to save at a batch's start); tests/test_faults.py's SIGTERM tests fail
        # (a step missing from metrics.csv, or an AttributeError) if Lightning changes it.
        loop = trainer.fit_loop.epoch_loop
        loop._batches_that_stepped -= 1
        try:
            trainer.save_checkpoint(str(path))
        finally:
            loop._batches_that_stepped += 1
        for logger in trainer.loggers:
            logger.save()  # metrics.csv up to this step
        return path

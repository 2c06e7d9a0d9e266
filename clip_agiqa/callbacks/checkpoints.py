"""The checkpoints of a run: ``best.ckpt`` on the monitored metric, ``last.ckpt`` after every epoch, and
``metrics.csv`` that forgets the rows a resume trains again."""

from __future__ import annotations

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from ..runs import RunLogger


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


class ForgetReplayedMetrics(Callback):
    """A resumed fit goes on from its checkpoint's step: metrics.csv forgets what was logged after it."""

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.ckpt_path is None:
            return
        for logger in trainer.loggers:  # rows are logged at the step count before each optimizer step
            if isinstance(logger, RunLogger) and trainer.is_global_zero:
                logger.forget_from(trainer.global_step)

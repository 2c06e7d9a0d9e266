"""The checkpoints of a run: ``best.ckpt`` on the monitored metric, ``last.ckpt`` after every epoch (two stock
``ModelCheckpoint`` callbacks), and ``metrics.csv`` that forgets the rows a resume trains again."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from ..errors import disk_full
from ..run_files import LAST_FILE
from ..runs import RunLogger, resume_command


class RunCheckpoint(ModelCheckpoint):
    """``best.ckpt`` by the monitored metric (the ``--checkpoint.*`` options): Lightning's ``ModelCheckpoint``
    under its own name, so that checkpoints written before keep its state (best score) under the same key."""


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt`` after every epoch, so ``--ckpt_path last`` goes on from the last finished epoch (Lightning's
    ``save_last`` writes it only when a top-k checkpoint was written, i.e. when the best improved): the one newest
    checkpoint of no metric, under a fixed name. It must come after ``RunCheckpoint`` in the trainer's callbacks,
    so that ``last.ckpt`` holds the best score of its own epoch."""

    def __init__(self, dirpath: str | Path | None = None) -> None:
        super().__init__(dirpath=dirpath, filename=Path(LAST_FILE).stem, monitor=None, save_top_k=1,
                         auto_insert_metric_name=False, enable_version_counter=False)

    @property
    def path(self) -> Path | None:
        return Path(self.dirpath) / LAST_FILE if self.dirpath else None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        """A full disk during a fit that already wrote ``last.ckpt``: the console's one line says how to resume."""
        full = disk_full(exception)
        if full is not None and trainer.state.fn == "fit" and self.path is not None and self.path.is_file():
            full.resume = resume_command(Path(trainer.default_root_dir))  # type: ignore[attr-defined]


class ForgetReplayedMetrics(Callback):
    """A resumed fit goes on from its checkpoint's step: metrics.csv forgets what was logged after it."""

    def on_train_start(self, trainer, pl_module) -> None:
        if trainer.ckpt_path is None:
            return
        for logger in trainer.loggers:  # rows are logged at the step count before each optimizer step
            if isinstance(logger, RunLogger) and trainer.is_global_zero:
                logger.forget_from(trainer.global_step)

"""The checkpoints of a run: ``best.ckpt`` on the monitored metric, ``last.ckpt`` after every epoch (two stock
``ModelCheckpoint`` callbacks), and ``metrics.csv`` that forgets the rows a resume trains again."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint

from ..errors import disk_full
from ..run_files import LAST_FILE
from ..runs import RunLogger, resume_command

SELECTIONS = ("latest_within_se", "best")
SELECTED_MONITOR = "val/srcc"  # the one figure whose chance variation is known from the validation size


def srcc_standard_error(pictures: int) -> float:
    """How much the SRCC over ``pictures`` pictures varies by chance: about 1 / sqrt(n - 1)."""
    return 1 / math.sqrt(max(pictures - 1, 1))


class RunCheckpoint(ModelCheckpoint):
    """``best.ckpt`` by the monitored metric (the ``--checkpoint.*`` options): Lightning's ``ModelCheckpoint``
    under its own name, so that checkpoints written before keep its state (best score) under the same key.

    ``select``: ``best``, the epoch with the best value (Lightning's rule); ``latest_within_se`` (a fit's default,
    for ``val/srcc``), the latest epoch whose val SRCC is within one standard error of the best seen so far, the
    standard error being the chance variation of an SRCC over the validation pictures (``srcc_standard_error``).
    Differences smaller than that are noise: among epochs the validation split cannot tell apart, the one trained
    longest is kept. On the task suite the chosen epoch's test SRCC was 0.013 below the best epoch's on average
    over tasks of 400 pictures or more (0.077 under 400), where the best val SRCC lost 0.034 (0.121): see the
    docs, "The task suite"."""

    def __init__(self, *args: Any, select: Literal["latest_within_se", "best"] = "best", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if select not in SELECTIONS:
            raise ValueError(f"--checkpoint.select must be one of {', '.join(SELECTIONS)}, got {select!r}")
        self.select = select
        self.best_seen: float | None = None  # the best val SRCC of any epoch so far (not only of a saved one)
        self.tolerance: float | None = None  # one standard error, once the validation size is known

    def on_fit_start(self, trainer, pl_module) -> None:
        records = getattr(trainer.datamodule, "split_records", None)
        size = len(records("val") or ()) if callable(records) else 0
        uses_rule = self.select == "latest_within_se" and self.monitor == SELECTED_MONITOR and self.mode == "max"
        self.tolerance = srcc_standard_error(size) if uses_rule and size > 1 else None

    def check_monitor_top_k(self, trainer, current: torch.Tensor | None = None) -> bool:
        """Whether this epoch becomes best.ckpt (Lightning asks once per validation)."""
        if self.tolerance is None or current is None or not torch.isfinite(current):
            return super().check_monitor_top_k(trainer, current)
        value = float(current)
        self.best_seen = value if self.best_seen is None else max(self.best_seen, value)
        within = value >= self.best_seen - self.tolerance
        return trainer.strategy.reduce_boolean_decision(within)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "best_seen": self.best_seen}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self.best_seen = state_dict.get("best_seen")


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

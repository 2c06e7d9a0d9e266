"""Progress for a job log or a pipe: one plain line per epoch where a progress bar redraws in place."""

from __future__ import annotations

import sys
import time

from lightning.pytorch import Callback


class EpochLines(Callback):
    """One plain line per epoch (epoch, step, train loss, the monitored metric and its best, then each target's
    figure when several are learnt), and one every ``interval`` seconds inside a long epoch: what a job log or a
    pipe shows where a progress bar redraws in place."""

    def __init__(self, interval: float = 300.0, stream=None) -> None:
        self.interval = interval
        self.stream = stream
        self._started = self._last = 0.0

    def _print(self, trainer, text: str) -> None:
        if trainer.is_global_zero:
            print(text, file=self.stream or sys.stdout, flush=True)

    @staticmethod
    def _value(trainer, key: str) -> str:
        value = trainer.callback_metrics.get(key)
        return f"{key} {float(value):.4f}" if value is not None else ""

    @staticmethod
    def _epoch(trainer) -> str:
        last = trainer.max_epochs - 1 if trainer.max_epochs and trainer.max_epochs > 0 else None
        return f"epoch {trainer.current_epoch}" + (f"/{last}" if last is not None else "")

    @staticmethod
    def _per_target(trainer, monitor: str) -> list[str]:
        """Each target's figure behind a mean over targets (``val/<target>/srcc`` for ``val/srcc``), in the order
        they were logged: the mean alone hides a target that does not learn."""
        stage, _, kind = monitor.partition("/")
        found = []
        for key, value in trainer.callback_metrics.items():
            parts = key.split("/")
            if len(parts) == 3 and parts[0] == stage and parts[2] == kind:
                found.append(f"{parts[1]} {float(value):.4f}")
        return found

    def on_train_start(self, trainer, pl_module) -> None:
        self._started = self._last = time.monotonic()  # a resume may start inside an epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._started = self._last = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        if time.monotonic() - self._last < self.interval:
            return
        self._last = time.monotonic()
        batches = trainer.num_training_batches
        of = f"/{batches}" if isinstance(batches, int) else ""
        self._print(trainer, f"{self._epoch(trainer)}  batch {batch_idx + 1}{of}  step {trainer.global_step}  "
                             f"{self._value(trainer, 'train/loss')}".rstrip())

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        parts = [self._epoch(trainer), f"step {trainer.global_step}", self._value(trainer, "train/loss")]
        checkpoint = trainer.checkpoint_callback
        monitor = getattr(checkpoint, "monitor", None)
        current = trainer.callback_metrics.get(monitor) if monitor else None
        if monitor and current is not None:
            # The checkpoint callback may judge this epoch only after this hook: take it into account here.
            # The best value seen (best.ckpt may hold a later epoch within one standard error of it), else best.ckpt's.
            best = getattr(checkpoint, "best_seen", None)
            best = getattr(checkpoint, "best_model_score", None) if best is None else best
            pick = min if getattr(checkpoint, "mode", "max") == "min" else max
            best = float(current) if best is None or best != best else pick(float(best), float(current))
            parts.append(f"{monitor} {float(current):.4f} (best {best:.4f})")
            parts.extend(self._per_target(trainer, monitor))
        parts.append(f"{time.monotonic() - self._started:.0f} s")
        self._print(trainer, "  ".join(part for part in parts if part))

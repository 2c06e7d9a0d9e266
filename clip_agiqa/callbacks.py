"""Callbacks: the CSV of predicted scores, complete and in a stable order under any number of processes."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from .score_csv import warn_unreadable, write_scores


class ScoreWriter(BasePredictionWriter):
    """Writes ``file_name,score,error`` (one score column per target for a multi-target model) for every
    predicted image, sorted by sample, to ``output``.

    An image that could not be read (the batch's ``error`` is not empty) is listed with an empty score
    and its error, and one warning counts and names them all.

    Each process writes its share to a part file; process 0 merges them once all have finished.
    Nothing is written outside ``predict``.
    """

    def __init__(self, output: str | None = None):
        super().__init__(write_interval="epoch")
        self.output = output

    def _output_path(self, trainer) -> Path:
        return Path(self.output) if self.output else Path(trainer.default_root_dir) / "predictions.csv"

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        path = self._output_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = []
        for batch in predictions:
            indices = torch.as_tensor(batch["index"]).tolist()
            errors = batch.get("error", [""] * len(indices))
            rows.extend(zip(indices, batch["file_name"], batch["score"].tolist(), errors))
        part = path.with_name(f"{path.name}.part{trainer.global_rank}")
        torch.save(rows, part)
        trainer.strategy.barrier("score_writer")
        if trainer.is_global_zero:
            merged = {}
            for rank in range(trainer.world_size):
                rank_part = path.with_name(f"{path.name}.part{rank}")
                merged.update({index: (name, score, error) for index, name, score, error in torch.load(rank_part)})
                os.remove(rank_part)
            ordered = [merged[i] for i in sorted(merged)]
            errors = {name: error for name, _, error in ordered if error}
            write_scores(path, [(name, score) for name, score, _ in ordered], errors, pl_module.model.targets)
            warn_unreadable(errors, len(ordered), path)
            print(f"wrote {len(ordered) - len(errors)} scores to {path}")
        trainer.strategy.barrier("score_writer_done")

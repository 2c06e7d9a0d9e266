"""Callbacks: the CSV of predicted scores, complete and in a stable order under any number of processes."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter


def write_scores(path: Path, rows) -> None:
    """``file_name,score`` rows to a CSV, written atomically (a killed run leaves no half-written file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "score"])
        writer.writerows((name, f"{score:.6f}") for name, score in rows)
    partial.replace(path)


class ScoreWriter(BasePredictionWriter):
    """Writes ``file_name,score`` for every predicted image, sorted by sample, to ``output``.

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
            rows.extend(zip(indices, batch["file_name"], batch["score"].tolist()))
        part = path.with_name(f"{path.name}.part{trainer.global_rank}")
        torch.save(rows, part)
        trainer.strategy.barrier("score_writer")
        if trainer.is_global_zero:
            merged = {}
            for rank in range(trainer.world_size):
                rank_part = path.with_name(f"{path.name}.part{rank}")
                merged.update({index: (name, score) for index, name, score in torch.load(rank_part)})
                os.remove(rank_part)
            write_scores(path, (merged[i] for i in sorted(merged)))
            print(f"wrote {len(merged)} scores to {path}")
        trainer.strategy.barrier("score_writer_done")

"""Callbacks: the CSV of predicted scores, complete and in a stable order under any number of processes."""

from __future__ import annotations

import csv
import os
import warnings
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter


def write_scores(path: Path, rows, errors: dict[str, str] | None = None) -> None:
    """``file_name,score,error`` rows to a CSV, written atomically (a killed run leaves no half-written file).

    ``rows`` are ``(file_name, score)``; a name in ``errors`` (an unreadable image) gets an empty score and
    the reason in ``error``, which is empty for every other image.
    """
    errors = errors or {}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file_name", "score", "error"])
        writer.writerows((name, "" if name in errors else f"{score:.6f}", errors.get(name, ""))
                         for name, score in rows)
    partial.replace(path)


def warn_unreadable(errors: dict[str, str], total: int, path: Path) -> None:
    """One warning that counts and names the images listed without a score."""
    if errors:
        warnings.warn(f"{len(errors)} of {total} image(s) could not be read and have no score in {path} "
                      f"(see its error column): {', '.join(list(errors)[:5])}"
                      + (f" and {len(errors) - 5} more" if len(errors) > 5 else ""), stacklevel=2)


class ScoreWriter(BasePredictionWriter):
    """Writes ``file_name,score,error`` for every predicted image, sorted by sample, to ``output``.

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
            write_scores(path, [(name, score) for name, score, _ in ordered], errors)
            warn_unreadable(errors, len(ordered), path)
            print(f"wrote {len(ordered) - len(errors)} scores to {path}")
        trainer.strategy.barrier("score_writer_done")

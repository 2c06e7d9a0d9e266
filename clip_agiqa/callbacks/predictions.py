"""Callbacks: the CSV of predicted scores, complete and in a stable order under any number of processes."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch.callbacks import BasePredictionWriter

from ..scores_file import ScoreCSV, check_output


class ScoreWriter(BasePredictionWriter):
    """Writes ``file_name,score,error`` (one score column per target for a multi-target model) for every
    predicted image, sorted by sample, to ``output``, with the writer and wording of ``clip-agiqa score``
    (``clip_agiqa.scores_file``): file names relative to the data root, the loader's short reasons in ``error``,
    "wrote N rows (M unreadable)".

    An image that could not be read (the batch's ``error`` is not empty) or got a non-finite score is listed
    with an empty score and its error, and one warning counts and names them.

    Each process writes its share to a part file; process 0 merges them once all have finished.
    Nothing is written outside ``predict``.
    """

    def __init__(self, output: str | None = None):
        super().__init__(write_interval="epoch")
        self.output = output

    def _output_path(self, trainer) -> Path:
        return Path(self.output) if self.output else Path(trainer.default_root_dir) / "predictions.csv"

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "predict":
            check_output(self._output_path(trainer))  # a folder given as --predictions.output: refused before any work

    def write_on_epoch_end(self, trainer, pl_module, predictions, batch_indices) -> None:
        path = self._output_path(trainer)
        path.parent.mkdir(parents=True, exist_ok=True)
        rows: list = []
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
            with ScoreCSV(path, pl_module.model.targets, with_prompt=False, partial="replace", overwrite=True,
                          extra_columns=pl_module.model.extra_columns()) as table:
                for name, score, error in ordered:
                    table.write(name, None, score, error)
            table.warn_unreadable()
            print(table.summary())
        trainer.strategy.barrier("score_writer_done")

"""Validation and test figures per dataset of a mixed fit (``clip_agiqa.data.mixed.MixedData``), and their mean."""

from __future__ import annotations

import math

import numpy as np
import torch
from lightning.pytorch import Callback

from ..metrics import correlation


class DatasetMetrics(Callback):
    """SRCC and PLCC of each dataset's validation and test samples (``val/<name>/srcc``, ``val/<name>/plcc``; per
    target ``val/<name>/<target>/srcc`` with several), and ``val/mean_srcc``: the mean over datasets of their SRCC
    (over targets too), the figure to select the checkpoint on. Pooling the datasets' samples into one SRCC
    would rank one study's scale against another's. Reads the batch's ``dataset`` numbers and the step's
    ``score``; one process (under DDP, each rank would see only its part)."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self._seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def _collect(self, outputs, batch) -> None:
        if not outputs or "score" not in outputs or "dataset" not in batch:
            return
        mos = batch["mos"].detach().float().cpu()
        score = outputs["score"].detach().float().cpu()
        self._seen.append((mos.reshape(len(mos), -1), score.reshape(len(score), -1),
                           torch.as_tensor(batch["dataset"]).cpu()))

    def _log(self, pl_module, prefix: str) -> None:
        if not self._seen:
            return
        mos, score, dataset = (torch.cat(parts) for parts in zip(*self._seen))
        self._seen.clear()
        targets = list(pl_module.model.targets)
        values, means = {}, []
        for number, name in enumerate(self.names):
            chosen = (dataset == number).numpy()
            own = []
            for index, target in enumerate(targets):
                key = f"{prefix}{name}/" if len(targets) == 1 else f"{prefix}{name}/{target}/"
                srcc = correlation("srcc", score[chosen, index].numpy(), mos[chosen, index].numpy())
                values[f"{key}srcc"] = srcc
                values[f"{key}plcc"] = correlation("plcc", score[chosen, index].numpy(), mos[chosen, index].numpy())
                values[f"{key}n"] = float(chosen.sum())
                own.append(srcc)
            means.append(float(np.mean(own)))
        known = [m for m in means if not math.isnan(m)]
        values[f"{prefix}mean_srcc"] = float(np.mean(known)) if len(known) == len(means) else math.nan
        pl_module.log_dict({key: torch.tensor(value) for key, value in values.items()})

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(outputs, batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._log(pl_module, "val/")

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(outputs, batch)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._log(pl_module, "test/")

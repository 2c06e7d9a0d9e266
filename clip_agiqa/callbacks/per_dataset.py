"""Validation and test figures per dataset of a mixed fit (``clip_agiqa.data.mixed.MixedData``), and their mean."""

from __future__ import annotations

import math

import numpy as np
import torch
from lightning.pytorch import Callback
from torchmetrics import CatMetric

from ..metrics import correlation


class DatasetMetrics(Callback):
    """SRCC and PLCC of each dataset's validation and test samples (``val/<name>/srcc``, ``val/<name>/plcc``; per
    target ``val/<name>/<target>/srcc`` with several), and ``val/mean_srcc``: the mean over datasets of their SRCC
    (over targets too), the figure to select the checkpoint on. Pooling the datasets' samples into one SRCC
    would rank one study's scale against another's. Reads the batch's ``dataset`` numbers and the step's
    ``score``. Under DDP each rank's rows are kept in a torchmetrics state that is gathered from every rank before
    the figures are computed, so every rank logs the figures of the whole split."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        # One row per sample: its dataset number, then each target's MOS, then each target's score.
        self.rows = CatMetric(nan_strategy="disable")

    def _start(self, pl_module) -> None:
        self.rows.reset()
        self.rows.to(pl_module.device)

    def _collect(self, outputs, batch) -> None:
        if not outputs or "score" not in outputs or "dataset" not in batch:
            return
        mos = batch["mos"].detach().float()
        score = outputs["score"].detach().float().to(mos.device)
        dataset = torch.as_tensor(batch["dataset"], device=mos.device).float()
        self.rows.update(torch.cat([dataset.reshape(-1, 1), mos.reshape(len(mos), -1),
                                    score.reshape(len(score), -1)], dim=1).to(self.rows.device))

    def _log(self, pl_module, prefix: str) -> None:
        if not self.rows.update_count:
            return
        rows = self.rows.compute().reshape(-1, 1 + 2 * len(pl_module.model.targets)).cpu()  # every rank's
        self.rows.reset()
        targets = list(pl_module.model.targets)
        dataset, mos, score = rows[:, 0].round().long(), rows[:, 1:1 + len(targets)], rows[:, 1 + len(targets):]
        values, means = {}, []
        for number, name in enumerate(self.names):
            chosen = (dataset == number).numpy()
            if not chosen.any():  # a test of some of the datasets (MixedData's test_datasets)
                continue
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
        values[f"{prefix}mean_srcc"] = float(np.mean(known)) if known and len(known) == len(means) else math.nan
        # Every rank computed them from every rank's rows: the reduction over ranks leaves them as they are.
        pl_module.log_dict({key: torch.tensor(value) for key, value in values.items()}, sync_dist=True)

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(outputs, batch)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._log(pl_module, "val/")

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start(pl_module)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._collect(outputs, batch)

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._log(pl_module, "test/")

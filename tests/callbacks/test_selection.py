"""best.ckpt's rule: the latest epoch whose val SRCC is within one standard error of the best so far (a fit's
default), or the best epoch (``--checkpoint.select best``, the paper's protocol)."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from clip_agiqa.callbacks.checkpoints import RunCheckpoint, srcc_standard_error


class GivenSRCC(L.LightningModule):
    """Logs a fixed val SRCC per epoch (and its name as ``other`` too)."""

    def __init__(self, values: list[float]):
        super().__init__()
        self.values = values
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight * batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        value = torch.tensor(self.values[self.current_epoch])
        self.log_dict({"val/srcc": value, "other": value})

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class ValidationOf(L.LightningDataModule):
    """A datamodule whose validation split holds ``size`` pictures (what the rule reads)."""

    def __init__(self, size: int):
        super().__init__()
        self.size = size

    def split_records(self, split: str) -> list:
        return [object()] * (self.size if split == "val" else 4)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 1)))

    def val_dataloader(self):
        return self.train_dataloader()


def chosen_epoch(tmp_path, values, size=101, **options) -> int:
    checkpoint = RunCheckpoint(dirpath=tmp_path, filename="best", monitor=options.pop("monitor", "val/srcc"),
                               mode="max", auto_insert_metric_name=False, enable_version_counter=False, **options)
    trainer = L.Trainer(max_epochs=len(values), callbacks=[checkpoint], accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(GivenSRCC(values), datamodule=ValidationOf(size))
    return torch.load(tmp_path / "best.ckpt", weights_only=True)["epoch"]


def test_the_standard_error_is_the_chance_variation_of_an_srcc():
    assert srcc_standard_error(101) == pytest.approx(0.1) and srcc_standard_error(26) == pytest.approx(0.2)


@pytest.mark.parametrize("values, size, expected", [
    ([0.5, 0.6, 0.55, 0.3], 101, 2),   # 0.55 is within 0.1 of 0.6; 0.3 is not
    ([0.5, 0.6, 0.55, 0.3], 10001, 1),  # 10,000 pictures: 0.05 below the best is real
    ([0.2, 0.7, 0.62, 0.65], 101, 3),
    ([0.5, math.nan, 0.45], 101, 2),    # a NaN epoch is never chosen
    ([math.nan, 0.4, math.nan], 101, 1),
])
def test_the_latest_epoch_within_one_standard_error_of_the_best_is_chosen(tmp_path, values, size, expected):
    assert chosen_epoch(tmp_path, values, size, select="latest_within_se") == expected


def test_best_and_other_monitors_keep_lightnings_rule(tmp_path):
    values = [0.5, 0.6, 0.55, 0.3]
    assert chosen_epoch(tmp_path / "best", values, select="best") == 1
    assert chosen_epoch(tmp_path / "other", values, select="latest_within_se", monitor="other") == 1
    assert chosen_epoch(tmp_path / "tiny", values, size=1, select="latest_within_se") == 1  # no size: no rule


@pytest.mark.parametrize("values, best_epoch", [([math.nan, 0.2, math.nan], 1), ([0.3, math.nan, 0.1], 0)])
def test_lightnings_checkpoint_selection_never_prefers_a_nan_epoch(tmp_path, values, best_epoch):
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/srcc", mode="max", filename="best",
                                 save_last=True, auto_insert_metric_name=False, enable_version_counter=False)
    trainer = L.Trainer(max_epochs=len(values), callbacks=[checkpoint], accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(GivenSRCC(values), datamodule=ValidationOf(10))
    assert float(checkpoint.best_model_score) == pytest.approx(values[best_epoch])
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["epoch"] == best_epoch


def test_a_resumed_fit_remembers_the_best_val_srcc_seen():
    checkpoint = RunCheckpoint(monitor="val/srcc", mode="max", select="latest_within_se")
    checkpoint.best_seen = 0.6
    resumed = RunCheckpoint(monitor="val/srcc", mode="max", select="latest_within_se")
    resumed.load_state_dict(checkpoint.state_dict())
    assert resumed.best_seen == 0.6


def test_an_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="--checkpoint.select must be one of latest_within_se, best"):
        RunCheckpoint(select="smooth")

"""Quality metrics against scipy; undefined correlations are NaN (all three, one warning), never chosen as best."""

from __future__ import annotations

import math
import warnings

import lightning as L
import numpy as np
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from scipy.stats import kendalltau, pearsonr, spearmanr

import clip_agiqa.metrics as metrics
from clip_agiqa.metrics import logistic4, logistic_plcc, quality_metrics

# float32 metric states against float64 scipy: agreement to float32 rounding.
TOLERANCE = dict(rel=1e-5, abs=1e-6)


def computed(predictions, mos, batches: int = 3) -> dict[str, float]:
    collection = quality_metrics("val/")
    for pred, target in zip(torch.tensor(predictions).chunk(batches), torch.tensor(mos).chunk(batches)):
        collection.update(pred.float(), target.float())
    return {name.removeprefix("val/"): float(value) for name, value in collection.compute().items()}


def test_metrics_match_scipy_with_ties_over_several_batches():
    rng = np.random.default_rng(0)
    mos = rng.uniform(0, 5, 60).round(1)  # rounded: ties, which rank correlations must average
    predictions = (mos + rng.normal(0, 1, 60)).round(1)
    values = computed(predictions, mos)
    assert values["srcc"] == pytest.approx(spearmanr(predictions, mos)[0], **TOLERANCE)
    assert values["plcc"] == pytest.approx(pearsonr(predictions, mos)[0], **TOLERANCE)
    assert values["krcc"] == pytest.approx(kendalltau(predictions, mos)[0], **TOLERANCE)  # tau-b
    assert values["rmse"] == pytest.approx(math.sqrt(np.mean((predictions - mos) ** 2)), **TOLERANCE)


@pytest.mark.parametrize("case", ["constant predictions", "constant mos", "one sample"])
def test_undefined_correlations_are_all_nan_with_one_warning(case):
    mos, predictions = [1.0, 2.0, 3.5, 4.0, 0.5, 2.5], [3.0] * 6
    if case == "constant mos":
        mos, predictions = predictions, mos
    if case == "one sample":
        mos, predictions = mos[:1], mos[:1]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        values = computed(predictions, mos, batches=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = spearmanr(predictions, mos)[0] if len(mos) > 1 else math.nan
    assert math.isnan(expected)  # what scipy says
    assert all(math.isnan(values[name]) for name in ("srcc", "plcc", "krcc")), values
    assert not math.isnan(values["rmse"])
    assert [str(w.message) for w in caught] == [
        "val/srcc, val/plcc, val/krcc are NaN: the predictions or the MOS are constant (a collapsed model?) "
        "or there are fewer than 2 samples"]


def test_building_the_metrics_is_quiet():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quality_metrics("test/")
    assert not caught  # no "Metric `SpearmanCorrcoef` will save all targets" notice


def test_reset_starts_a_new_epoch():
    collection = quality_metrics("val/")
    collection.update(torch.full((4,), 2.0), torch.arange(4.0))
    with pytest.warns(RuntimeWarning):
        collection.compute()
    collection.reset()
    collection.update(torch.arange(4.0), torch.arange(4.0))
    assert float(collection.compute()["val/srcc"]) == pytest.approx(1.0)


def test_logistic4_is_defined_at_its_centre_when_the_slope_parameter_is_zero():
    with np.errstate(over="ignore"):  # exp(+-x / 1e-12) overflows to inf far from the centre: a clean step
        values = logistic4(np.array([-1.0, 0.5, 2.0]), 4.0, 1.0, 0.5, 0.0)
    np.testing.assert_allclose(values, [1.0, 2.5, 4.0])  # through the midpoint (b1 + b2) / 2, not 0 / 0


def test_logistic_plcc_straightens_a_logistic_relation():
    predictions = np.random.default_rng(1).uniform(-3, 3, 80)
    mos = 1 + 3 / (1 + np.exp(-2 * (predictions - 0.5)))
    assert pearsonr(predictions, mos)[0] < 0.97
    assert logistic_plcc(predictions, mos) == pytest.approx(1.0, abs=1e-6)


def test_a_logistic_fit_that_fails_warns_and_gives_nan(monkeypatch):
    def no_convergence(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found: Number of calls to function has reached maxfev = 20000.")

    monkeypatch.setattr(metrics, "curve_fit", no_convergence)
    with pytest.warns(RuntimeWarning, match="logistic fit failed .*maxfev"):
        assert math.isnan(logistic_plcc([0.1, 0.4, 0.2, 0.9, 0.5], [1.0, 2.0, 1.5, 4.0, 3.0]))


def test_logistic_plcc_of_constant_predictions_warns_and_gives_nan():
    with pytest.warns(RuntimeWarning, match="non-constant"):
        assert math.isnan(logistic_plcc([2.0] * 5, [1.0, 2.0, 1.5, 4.0, 3.0]))


class LogsGivenSRCC(L.LightningModule):
    """Logs val/srcc from a fixed list, one value per epoch."""

    def __init__(self, values: list[float]):
        super().__init__()
        self.values = values
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight * batch[0]).sum()

    def validation_step(self, batch, batch_idx):
        pass

    def on_validation_epoch_end(self):
        self.log("val/srcc", torch.tensor(self.values[self.current_epoch]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.ones(2, 1)))

    def val_dataloader(self):
        return self.train_dataloader()


@pytest.mark.parametrize("values, best_epoch", [([math.nan, 0.2, math.nan], 1), ([0.3, math.nan, 0.1], 0)])
def test_checkpoint_selection_never_prefers_a_nan_epoch(tmp_path, values, best_epoch):
    # The CLI's settings (cli.py): one best.ckpt, chosen on val/srcc.
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/srcc", mode="max", filename="best",
                                 save_last=True, auto_insert_metric_name=False, enable_version_counter=False)
    trainer = L.Trainer(max_epochs=len(values), callbacks=[checkpoint], accelerator="cpu", logger=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(LogsGivenSRCC(values))
    assert float(checkpoint.best_model_score) == pytest.approx(values[best_epoch])
    assert torch.load(tmp_path / "best.ckpt", weights_only=True)["epoch"] == best_epoch


def _rank_metrics(rank: int, world_size: int, port: int, results) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                         world_size=world_size)
    try:
        collection = quality_metrics("val/")
        # Each process sees constant predictions; together they are not (torchmetrics' PLCC said NaN).
        collection.update(torch.full((3,), float(rank)), torch.tensor([0.0, 1.0, 2.0]) + 3 * rank)
        results[rank] = {name: float(value) for name, value in collection.compute().items()}
    finally:
        torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_under_ddp_every_process_values_count():
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    results = mp.Manager().dict()
    mp.spawn(_rank_metrics, args=(2, port, results), nprocs=2)
    predictions, mos = [0.0] * 3 + [1.0] * 3, [0, 1, 2, 3, 4, 5]
    for rank in (0, 1):
        assert results[rank]["val/srcc"] == pytest.approx(spearmanr(predictions, mos)[0], **TOLERANCE)
        assert results[rank]["val/plcc"] == pytest.approx(pearsonr(predictions, mos)[0], **TOLERANCE)
        assert results[rank]["val/krcc"] == pytest.approx(kendalltau(predictions, mos)[0], **TOLERANCE)

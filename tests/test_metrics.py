"""Quality metrics against scipy; undefined correlations are NaN (all three, one warning), never chosen as best."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import curve_fit
from scipy.stats import kendalltau, pearsonr, spearmanr

import clip_agiqa.metrics as metrics
from clip_agiqa.metrics import FIT_BOUNDS, correlations, logistic4, logistic_plcc, quality_metrics

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


def test_one_correlation_helper_agrees_with_scipy_and_is_nan_where_undefined():
    rng = np.random.default_rng(3)
    mos = rng.uniform(0, 5, 50).round(1)
    predictions = (mos + rng.normal(0, 1, 50)).round(1)
    values = correlations(predictions, mos)
    assert values["srcc"] == pytest.approx(spearmanr(predictions, mos)[0], abs=1e-12)
    assert values["plcc"] == pytest.approx(pearsonr(predictions, mos)[0], abs=1e-12)
    assert values["krcc"] == pytest.approx(kendalltau(predictions, mos)[0], abs=1e-12)
    for undefined in (correlations([2.0] * 5, mos[:5]), correlations(mos[:1], mos[:1]),
                      correlations([1.0, math.nan, 3.0], [1.0, 2.0, 3.0])):
        assert all(math.isnan(v) for v in undefined.values())


def reference_rising_logistic_plcc(predictions, mos) -> float:
    """Scipy's curve_fit on the raw values (not standardised), with the same constraints: b1 >= b2, the slope
    scale at least 0.1 standard deviation of the predictions; started at the VQEG guess."""
    x, y = np.asarray(predictions, dtype=float), np.asarray(mos, dtype=float)

    def rising(values, rise, low, centre, scale):
        return logistic4(values, low + rise, low, centre, scale)

    bounds = ([0, -np.inf, -np.inf, FIT_BOUNDS[0][3] * x.std()], [np.inf, np.inf, np.inf, FIT_BOUNDS[1][3] * x.std()])
    params, _ = curve_fit(rising, x, y, p0=[np.ptp(y), y.min(), x.mean(), x.std()], bounds=bounds, max_nfev=20000)
    return pearsonr(rising(x, *params), y)[0]


def test_the_logistic_is_increasing_so_reversed_predictions_never_get_a_positive_plcc():
    predictions = np.random.default_rng(1).uniform(-3, 3, 80)
    mos = 1 + 3 / (1 + np.exp(-2 * (predictions - 0.5)))
    reversed_plcc = logistic_plcc(-predictions, mos)  # the unconstrained fit said +1.0 (a falling logistic)
    assert reversed_plcc <= 0
    assert reversed_plcc == pytest.approx(pearsonr(-predictions, mos)[0], abs=1e-9)  # the family's linear limit
    for seed in range(5):  # weakly anti-correlated, as AGIQA-1K split 0 (SRCC -0.18, logistic PLCC +0.16)
        rng = np.random.default_rng(seed)
        mos = rng.uniform(0, 5, 120)
        predictions = -0.2 * mos + rng.normal(0, 1, 120)
        assert logistic_plcc(predictions, mos) <= 0


@pytest.mark.parametrize("seed", range(4))
def test_the_logistic_plcc_matches_scipy_curve_fit_with_the_same_constraints(seed):
    rng = np.random.default_rng(seed)
    predictions = rng.uniform(0, 10, 100)
    mos = 20 + 60 / (1 + np.exp(-(predictions - 5) / 1.5)) + rng.normal(0, 5, 100)
    expected = reference_rising_logistic_plcc(predictions, mos)
    assert expected > pearsonr(predictions, mos)[0]  # the fit straightens the relation
    assert logistic_plcc(predictions, mos) == pytest.approx(expected, abs=1e-4)


def test_the_logistic_plcc_of_near_random_predictions_is_stable():
    moved = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        mos = rng.uniform(0, 5, 120)
        predictions = 0.05 * mos + rng.normal(0, 1, 120)
        value = logistic_plcc(predictions, mos)
        # the units of the predictions do not matter, and neither does noise far below their spread
        assert logistic_plcc(100 * predictions + 7, 3 * mos - 1) == pytest.approx(value, abs=1e-6)
        moved.append(abs(logistic_plcc(predictions + rng.normal(0, 1e-3, 120), mos) - value))
    assert max(moved) < 0.01  # the unconstrained fit moved 0.034 (seed 4); scale down to 0.001 std: 0.048 (seed 8)


def test_a_logistic_fit_that_fails_warns_and_gives_nan(monkeypatch):
    def no_convergence(*args, **kwargs):
        raise RuntimeError("Optimal parameters not found: Number of calls to function has reached maxfev = 20000.")

    monkeypatch.setattr(metrics, "curve_fit", no_convergence)
    with pytest.warns(RuntimeWarning, match="logistic fit failed .*maxfev"):
        assert math.isnan(logistic_plcc([0.1, 0.4, 0.2, 0.9, 0.5], [1.0, 2.0, 1.5, 4.0, 3.0]))


def test_logistic_plcc_of_constant_predictions_warns_and_gives_nan():
    with pytest.warns(RuntimeWarning, match="non-constant"):
        assert math.isnan(logistic_plcc([2.0] * 5, [1.0, 2.0, 1.5, 4.0, 3.0]))


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

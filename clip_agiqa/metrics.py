"""Correlation metrics of IQA (SRCC, PLCC, KRCC, RMSE), exact under DDP, plus the logistic-fitted PLCC.

One helper computes the correlations (``correlations``, float64, scipy's definitions): the training metrics
(after gathering every process's values), the test report's scatter title and the benchmark's results all
use it. When the predictions or the MOS are constant (a collapsed model) or there are fewer than 2 samples,
the correlations are undefined: SRCC, PLCC and KRCC are all NaN, as scipy gives, with one warning.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from scipy.optimize import curve_fit
from scipy.stats import kendalltau, rankdata
from torchmetrics import MeanMetric, MeanSquaredError, Metric, MetricCollection
from torchmetrics.utilities import dim_zero_cat

from .calibration import COVERAGES, central_interval, rater_distances

CORRELATIONS = ("srcc", "plcc", "krcc")


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    x, y = x - x.mean(), y - y.mean()
    return float(np.clip((x * y).sum() / math.sqrt((x * x).sum() * (y * y).sum()), -1.0, 1.0))


def _defined(x: np.ndarray, y: np.ndarray) -> bool:
    """Correlations need 2 or more finite values on each side, neither side constant."""
    return (len(x) >= 2 and len(x) == len(y) and bool(np.isfinite(x).all() and np.isfinite(y).all())
            and np.ptp(x) > 0 and np.ptp(y) > 0)


CORRELATION_OF = {
    "srcc": lambda x, y: _pearson(rankdata(x), rankdata(y)),  # ties get their average rank, as scipy's spearmanr
    "plcc": _pearson,
    "krcc": lambda x, y: float(kendalltau(x, y)[0]),  # tau-b
}


def correlation(name: str, predictions, mos) -> float:
    """One of ``srcc``, ``plcc``, ``krcc`` of predictions against MOS, in float64; NaN when undefined."""
    x = np.asarray(predictions, dtype=np.float64).ravel()
    y = np.asarray(mos, dtype=np.float64).ravel()
    return CORRELATION_OF[name](x, y) if _defined(x, y) else math.nan


def correlations(predictions, mos) -> dict[str, float]:
    """SRCC, PLCC and KRCC (tau-b) of predictions against MOS; all NaN when undefined."""
    return {name: correlation(name, predictions, mos) for name in CORRELATIONS}


class Correlation(Metric):
    """A correlation of every prediction and target seen, by every process (torchmetrics gathers the
    buffers), computed by ``correlation`` in float64 (torchmetrics' PearsonCorrCoef merges per-process
    statistics and gives NaN when each process's predictions are constant even though all of them together
    are not)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, name: str):
        super().__init__()
        self.name = name
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().flatten())
        self.target.append(target.detach().flatten())

    def compute(self) -> torch.Tensor:
        if isinstance(self.preds, list) and not self.preds:  # nothing seen (a synced buffer is one tensor)
            return torch.tensor(math.nan, device=self.device)
        preds, target = dim_zero_cat(self.preds), dim_zero_cat(self.target)
        value = correlation(self.name, preds.double().cpu().numpy(), target.double().cpu().numpy())
        return torch.tensor(value, dtype=torch.float32, device=preds.device)


class QualityMetrics(MetricCollection):
    """The metric collection; when the correlations are undefined it says so once."""

    def compute(self) -> dict[str, torch.Tensor]:
        values = super().compute()
        names = [self.prefix + name for name in CORRELATIONS]
        if any(torch.isnan(values[name]) for name in names):
            warnings.warn(f"{', '.join(names)} are NaN: the predictions or the MOS are constant (a collapsed "
                          "model?) or there are fewer than 2 samples", RuntimeWarning, stacklevel=2)
        return values


def quality_metrics(prefix: str) -> QualityMetrics:
    """SRCC/PLCC/KRCC (tau-b)/RMSE. Update them with fp32 1-D tensors."""
    return QualityMetrics(
        {**{name: Correlation(name) for name in CORRELATIONS}, "rmse": MeanSquaredError(squared=False)},
        prefix=prefix,
        compute_groups=False,
    )


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic usually fitted from predictions to MOS before PLCC (VQEG): from b2 (low) to b1
    (high) around b3 with slope scale b4; monotonically increasing when b1 > b2 and b4 > 0."""
    return (b1 - b2) / (1 + np.exp(-(x - b3) / (np.abs(b4) + 1e-12))) + b2


def _rising_logistic(z: np.ndarray, rise: float, low: float, centre: float, scale: float) -> np.ndarray:
    """``logistic4`` with b1 = low + rise: increasing for rise >= 0 and scale > 0, the bounds of the fit."""
    return logistic4(z, low + rise, low, centre, scale)


# Bounds of the fit on standardised predictions: rise >= 0 keeps the mapping increasing (it may straighten a
# relation, never reverse it); a slope scale of at least 0.1 standard deviations keeps it from becoming a step
# that chases noise (with 0.001, near-random predictions moved by 0.05 under noise of 1e-3; with 0.1, 6e-4).
FIT_BOUNDS = ([0.0, -np.inf, -np.inf, 0.1], [np.inf, np.inf, np.inf, 1e3])


def logistic_plcc(predictions, mos) -> float:
    """PLCC after mapping predictions onto the MOS with a monotonically increasing 4-parameter logistic (VQEG).

    The fit runs on standardised predictions and MOS (so the result does not depend on their units), starting
    from the VQEG guess (b1 = max MOS, b2 = min MOS, b3 = mean and b4 = std of the predictions), within
    ``FIT_BOUNDS``. An increasing map cannot make predictions that fall as the MOS rises look right: for those
    (linear PLCC <= 0) and wherever the best increasing map is flat, the result is the linear PLCC, the
    family's limit. NaN with a warning when it cannot be computed (too few or constant values, or a fit that
    does not converge)."""
    x = np.asarray(predictions, dtype=np.float64).ravel()
    y = np.asarray(mos, dtype=np.float64).ravel()
    if len(x) < 4 or not _defined(x, y):
        warnings.warn(f"logistic PLCC is NaN: the fit needs at least 4 finite, non-constant predictions and MOS "
                      f"({len(x)} given)", RuntimeWarning, stacklevel=2)
        return math.nan
    linear = _pearson(x, y)
    if linear <= 0:
        return linear
    z, target = (x - x.mean()) / x.std(), (y - y.mean()) / y.std()
    start = [np.ptp(target), target.min(), 0.0, 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow in exp while searching; the covariance is not used
            params, _ = curve_fit(_rising_logistic, z, target, p0=start, bounds=FIT_BOUNDS, max_nfev=20000)
    except (RuntimeError, ValueError) as error:  # no convergence
        warnings.warn(f"logistic PLCC is NaN: the 4-parameter logistic fit failed ({error})", RuntimeWarning,
                      stacklevel=2)
        return math.nan
    fitted = _rising_logistic(z, *params)
    if not np.ptp(fitted) > 1e-9:
        return linear
    return _pearson(fitted, target)


def as_metric_input(values: torch.Tensor) -> torch.Tensor:
    return values.detach().float().flatten()


def coverage_name(coverage: float) -> str:
    return f"coverage{round(coverage * 100)}"



def width_name(coverage: float) -> str:
    return f"width{round(coverage * 100)}"



class CalibrationMetrics(torch.nn.Module):
    """``update(mos, mean, std, probs, levels, mos_std)`` for one target ((batch,) each; ``probs`` (batch, levels)
    over ``levels``; ``mos_std`` NaN where unknown), or ``add(mos, mean, std, js, wass)`` with the per-sample
    distances already taken (a test's predictions file); ``compute()`` -> {prefix + name: value}."""

    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix
        names = [f(c) for c in COVERAGES for f in (coverage_name, width_name)] + ["js", "wasserstein"]
        self.means = torch.nn.ModuleDict({name: MeanMetric() for name in names})

    def update(self, mos, mean, std, probs, levels, mos_std=None) -> None:
        js, wass = (None, None) if mos_std is None else rater_distances(mos, probs, levels, mos_std)
        self.add(mos, mean, std, js, wass, scale=(levels[0], levels[-1]))

    def add(self, mos, mean, std, js=None, wass=None, scale=None) -> None:
        """Coverage and width of the central intervals ``mean +- z * std`` (cut to the MOS ``scale`` when given);
        the mean of the per-sample distances where they are known (finite)."""
        mos, mean, std = mos.float(), mean.float(), std.float()
        for coverage in COVERAGES:
            lower, upper = central_interval(mean, std, coverage, scale)
            self.means[coverage_name(coverage)].update(((mos >= lower) & (mos <= upper)).float())
            self.means[width_name(coverage)].update(upper - lower)
        for name, distance in (("js", js), ("wasserstein", wass)):
            if distance is not None:
                known = torch.isfinite(distance.float())
                self.means[name].update(distance.float().nan_to_num(0.0), known.float())

    def compute(self) -> dict[str, torch.Tensor]:
        values = {}
        for name, metric in self.means.items():
            if name in ("js", "wasserstein") and not float(metric.weight) > 0:
                continue  # no rater std in the data: no distances
            values[self.prefix + name] = metric.compute()
        return values

    def reset(self) -> None:
        for metric in self.means.values():
            metric.reset()

"""Correlation metrics of IQA (SRCC, PLCC, KRCC, RMSE), exact under DDP, plus the logistic-fitted PLCC.

When the predictions or the MOS are constant (a collapsed model) or there are fewer than 2 samples,
the correlations are undefined: SRCC, PLCC and KRCC are all NaN, as scipy gives, with one warning.
"""

from __future__ import annotations

import math
import warnings
from typing import Callable

import numpy as np
import torch
from scipy.optimize import curve_fit
from scipy.stats import pearsonr
from torchmetrics import MeanSquaredError, Metric, MetricCollection
from torchmetrics.functional import kendall_rank_corrcoef, spearman_corrcoef
from torchmetrics.utilities import dim_zero_cat

CORRELATIONS = ("srcc", "plcc", "krcc")


class Correlation(Metric):
    """A correlation of every prediction and target seen, by every process (torchmetrics gathers the
    buffers), computed in float64. NaN, as scipy gives, when either side is constant or there are fewer
    than 2 samples. (torchmetrics' PearsonCorrCoef merges per-process statistics and gives NaN when each
    process's predictions are constant even though all of them together are not.)"""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, correlation: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]):
        super().__init__()
        self.correlation = correlation
        self.add_state("preds", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        self.preds.append(preds.detach().flatten())
        self.target.append(target.detach().flatten())

    def compute(self) -> torch.Tensor:
        if isinstance(self.preds, list) and not self.preds:  # nothing seen (a synced buffer is one tensor)
            return torch.tensor(math.nan, device=self.device)
        preds, target = dim_zero_cat(self.preds).double(), dim_zero_cat(self.target).double()
        if preds.numel() < 2 or bool((preds == preds[0]).all()) or bool((target == target[0]).all()):
            return torch.tensor(math.nan, device=preds.device)
        return self.correlation(preds, target).float()


def pearson(preds: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    preds, target = preds - preds.mean(), target - target.mean()
    return ((preds * target).sum() / (preds.square().sum() * target.square().sum()).sqrt()).clamp(-1, 1)


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
        {
            "srcc": Correlation(spearman_corrcoef),
            "plcc": Correlation(pearson),
            "krcc": Correlation(kendall_rank_corrcoef),
            "rmse": MeanSquaredError(squared=False),
        },
        prefix=prefix,
        compute_groups=False,
    )


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic usually fitted from predictions to MOS before PLCC (VQEG)."""
    return (b1 - b2) / (1 + np.exp(-(x - b3) / (np.abs(b4) + 1e-12))) + b2


def logistic_plcc(predictions, mos) -> float:
    """PLCC after mapping predictions onto the MOS scale with the 4-parameter logistic; NaN with a
    warning when it cannot be computed (too few or constant values, or a fit that does not converge)."""
    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    if len(x) < 4 or not (np.isfinite(x).all() and np.isfinite(y).all()) or np.ptp(x) == 0 or np.ptp(y) == 0:
        warnings.warn(f"logistic PLCC is NaN: the fit needs at least 4 finite, non-constant predictions and MOS "
                      f"({len(x)} given)", RuntimeWarning, stacklevel=2)
        return math.nan
    start = [y.max(), y.min(), float(np.mean(x)), float(np.std(x))]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # overflow in exp while searching; the covariance is not used
            params, _ = curve_fit(logistic4, x, y, p0=start, maxfev=20000)
    except RuntimeError as error:  # no convergence
        warnings.warn(f"logistic PLCC is NaN: the 4-parameter logistic fit failed ({error})", RuntimeWarning,
                      stacklevel=2)
        return math.nan
    fitted = logistic4(x, *params)
    if np.ptp(fitted) == 0:
        warnings.warn("logistic PLCC is NaN: the fitted logistic is flat", RuntimeWarning, stacklevel=2)
        return math.nan
    return float(pearsonr(fitted, y)[0])


def as_metric_input(values: torch.Tensor) -> torch.Tensor:
    return values.detach().float().flatten()

"""Correlation metrics of IQA (SRCC, PLCC, KRCC, RMSE), exact under DDP, plus the logistic-fitted PLCC."""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torchmetrics import MeanSquaredError, MetricCollection
from torchmetrics.regression import KendallRankCorrCoef, PearsonCorrCoef, SpearmanCorrCoef


def quality_metrics(prefix: str) -> MetricCollection:
    """SRCC/PLCC/KRCC/RMSE. Update them with fp32 1-D tensors (PLCC can turn NaN on half precision)."""
    return MetricCollection(
        {
            "srcc": SpearmanCorrCoef(),
            "plcc": PearsonCorrCoef(),
            "krcc": KendallRankCorrCoef(),
            "rmse": MeanSquaredError(squared=False),
        },
        prefix=prefix,
        compute_groups=False,
    )


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The 4-parameter logistic usually fitted from predictions to MOS before PLCC (VQEG)."""
    return (b1 - b2) / (1 + np.exp(-(x - b3) / np.abs(b4) - 1e-12)) + b2


def logistic_plcc(predictions, mos) -> float:
    """PLCC after mapping predictions onto the MOS scale with the 4-parameter logistic."""
    from scipy.optimize import curve_fit
    from scipy.stats import pearsonr

    x = np.asarray(predictions, dtype=np.float64)
    y = np.asarray(mos, dtype=np.float64)
    start = [y.max(), y.min(), float(np.mean(x)), float(np.std(x)) or 1.0]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = curve_fit(logistic4, x, y, p0=start, maxfev=20000)
        fitted = logistic4(x, *params)
    except RuntimeError:  # no convergence: fall back to the linear PLCC
        fitted = x
    return float(pearsonr(fitted, y)[0])


def as_metric_input(values: torch.Tensor) -> torch.Tensor:
    return values.detach().float().flatten()

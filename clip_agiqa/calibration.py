"""Scores with certainty: distributions over ordered levels, their calibration, and what a score means.

- ``soft_labels``: the raters' distribution as a distribution over the levels, from (MOS, std): a Gaussian
  discretised on bins whose edges lie half-way between levels (the end bins reach to infinity), as DeQA-Score does.
- ``mean_and_std``: a distribution's mean (the score) and standard deviation.
- Predictive intervals are Gaussian: ``mean +- z * std_scale * std``, cut to the MOS scale
  (``central_interval``). ``std_scale`` (one per target) is fitted on
  the validation split (``fitted_std_scale``: split-conformal, so that the central 90% interval holds at least 90%
  of the validation MOS: the errors need not be Gaussian), which fixes intervals that are too narrow or too wide,
  and is saved with the model.
- ``js_distance`` / ``wasserstein``: the distances between predicted and rater distributions, equal to scipy's
  ``jensenshannon`` (natural log) and ``wasserstein_distance`` on the levels.
- ``quantiles_of`` / ``percentile``: the training MOS distribution (``QUANTILES`` quantiles per target, saved with
  the model) and where a score falls among the training images (0-100).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

QUANTILES = 201  # quantiles of the training MOS a saved model keeps per target (every half percent)
COVERAGES = (0.5, 0.9)  # the central predictive intervals the test report measures
MIN_STD = 1e-3  # a rater std of 0 (one rater, or all agree) is a point mass: kept finite


def z_of(coverage: float) -> float:
    """The half-width, in standard deviations, of the central ``coverage`` interval of a Gaussian."""
    return math.sqrt(2.0) * float(torch.erfinv(torch.tensor(coverage, dtype=torch.float64)))


def soft_labels(mos: torch.Tensor, std: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """N(mos, std) discretised on ``levels`` (ascending): (..., levels), each row summing to 1."""
    edges = (levels[1:] + levels[:-1]) / 2
    spread = std.clamp_min(MIN_STD)[..., None]
    cdf = torch.special.ndtr((edges - mos[..., None]) / spread)
    zeros, ones = torch.zeros_like(cdf[..., :1]), torch.ones_like(cdf[..., :1])
    return torch.cat([cdf, ones], dim=-1) - torch.cat([zeros, cdf], dim=-1)


def mean_and_std(probs: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of distributions ``probs`` (..., levels) over ``levels``."""
    mean = probs @ levels
    variance = (probs * (levels - mean[..., None]) ** 2).sum(dim=-1)
    return mean, variance.clamp_min(0).sqrt()


def kl_to(target: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """KL(target || predicted) over the last dimension (0 when they agree): the loss against soft labels."""
    return (torch.special.xlogy(target, target) - target * log_probs).sum(dim=-1)


def js_distance(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """Jensen-Shannon distance (the square root of the divergence, natural log) over the last dimension."""
    middle = (p + q) / 2
    divergence = (torch.special.xlogy(p, p) - torch.special.xlogy(p, middle)
                  + torch.special.xlogy(q, q) - torch.special.xlogy(q, middle)).sum(dim=-1) / 2
    return divergence.clamp_min(0).sqrt()


def wasserstein(p: torch.Tensor, q: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """1-Wasserstein distance between distributions over the same ascending ``levels``: the area between CDFs."""
    gaps = levels[1:] - levels[:-1]
    return ((p.cumsum(dim=-1) - q.cumsum(dim=-1))[..., :-1].abs() * gaps).sum(dim=-1)


def central_interval(mean: torch.Tensor, std: torch.Tensor, coverage: float, scale=None):
    """(lower, upper) of the central ``coverage`` interval ``mean +- z * std``, cut to the MOS ``scale`` (low, high)
    when given: no MOS lies outside it, so the cut changes the width, never the coverage."""
    half = z_of(coverage) * std
    lower, upper = mean - half, mean + half
    if scale is not None:
        low, high = (float(v) for v in scale)
        lower, upper = lower.clamp(low, high), upper.clamp(low, high)
    return lower, upper


FITTED_COVERAGE = 0.9  # the interval the std scale is fitted to hold


def fitted_std_scale(abs_z: torch.Tensor, coverage: float = FITTED_COVERAGE) -> torch.Tensor:
    """The scale ``s`` of predicted stds from the validation errors in predicted stds, ``|MOS - mean| / std`` (1-D):
    the split-conformal quantile (the ceil((n + 1) coverage)-th smallest) over ``z_of(coverage)``, so the central
    ``coverage`` interval holds at least that share of exchangeable new MOS. 1 without finite values."""
    values = abs_z[torch.isfinite(abs_z)].sort().values
    if not len(values):
        return torch.ones((), device=abs_z.device)
    rank = min(len(values), math.ceil((len(values) + 1) * coverage))
    scale = values[rank - 1] / z_of(coverage)
    return scale if scale > 0 else torch.ones((), device=abs_z.device)


def quantiles_of(values: torch.Tensor, count: int = QUANTILES) -> torch.Tensor:
    """``count`` evenly spaced quantiles (0 to 1) of each column of ``values`` (samples, targets): (targets, count);
    NaN where a column has no finite value."""
    grid = torch.linspace(0, 1, count, dtype=torch.float64)
    columns = []
    for column in values.double().T:
        finite = column[torch.isfinite(column)]
        columns.append(torch.quantile(finite, grid) if len(finite) else torch.full((count,), float("nan"),
                                                                                   dtype=torch.float64))
    return torch.stack(columns).float()


def percentile(scores: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Where ``scores`` (batch, targets) fall among the training MOS whose ``quantiles`` (targets, count) are kept:
    0-100, linear between the quantiles (a score below all is 0, above all 100); NaN where none are known."""
    count = quantiles.shape[-1]
    grid = torch.linspace(0, 100, count, device=scores.device)
    result = torch.empty_like(scores, dtype=torch.float32)
    for index in range(scores.shape[-1]):
        table, value = quantiles[index].to(scores.device).float(), scores[:, index].float().contiguous()
        upper = torch.searchsorted(table, value, right=True).clamp(1, count - 1)
        lower = upper - 1
        low, high = table[lower], table[upper]
        fraction = ((value - low) / (high - low).clamp_min(1e-12)).clamp(0, 1)
        result[:, index] = torch.where(torch.isnan(table).any(), torch.tensor(float("nan"), device=scores.device),
                                       grid[lower] + fraction * (grid[upper] - grid[lower]))
    return result


def check_quantiles(quantiles: torch.Tensor, source: str) -> None:
    """Saved training quantiles: ascending per target (or all NaN: not recorded)."""
    from .errors import InputError

    for row in quantiles:
        if torch.isnan(row).all():
            continue
        if not torch.isfinite(row).all() or (row[1:] < row[:-1]).any():
            raise InputError(f"{source}: mos_quantiles must be ascending finite numbers per target")


def draw_reliability(mos, mean, std, path: Path, title: str = "", size: int = 480) -> Path:
    """The reliability plot of Gaussian predictive intervals: observed coverage (share of MOS inside the central
    interval) against nominal coverage, 5% to 95%, with the diagonal (perfect calibration). A PNG (PIL)."""
    from PIL import Image, ImageDraw

    from .files import atomic_write

    mos, mean, std = (np.asarray(v, dtype=float) for v in (mos, mean, std))
    nominal = np.linspace(0.05, 0.95, 19)
    z = np.abs(mos - mean) / np.maximum(std, 1e-12)
    observed = [float(np.mean(z <= z_of(p))) if len(z) else float("nan") for p in nominal]
    margin, image = 50, Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    span = size - 2 * margin

    def to_pixel(x: float, y: float) -> tuple[float, float]:
        return margin + x * span, size - margin - y * span

    draw.rectangle([margin, margin, size - margin, size - margin], outline="black")
    draw.line([to_pixel(0, 0), to_pixel(1, 1)], fill=(180, 180, 180))
    points = [to_pixel(x, y) for x, y in zip(nominal, observed) if math.isfinite(y)]
    if len(points) > 1:
        draw.line(points, fill=(214, 39, 40), width=2)
    for px, py in points:
        draw.ellipse([px - 3, py - 3, px + 3, py + 3], fill=(214, 39, 40))
    for value in np.linspace(0, 1, 5):
        x, _ = to_pixel(value, 0)
        _, y = to_pixel(0, value)
        draw.text((x - 10, size - margin + 5), f"{value:.2f}", fill="black")
        draw.text((5, y - 5), f"{value:.2f}", fill="black")
    draw.text((margin, size - 20), "nominal coverage of the central interval", fill="black")
    draw.text((margin, 8), title or "observed coverage (share of MOS inside)", fill="black")
    with atomic_write(path, "wb") as handle:
        image.save(handle, format="PNG")
    return path


def rater_distances(mos, probs, levels, mos_std) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample, the Jensen-Shannon and Wasserstein distances between the predicted distribution (``probs``
    (batch, levels) over ``levels``) and the raters' (``mos``, ``mos_std``): (batch,) each, NaN where ``mos_std`` is.
    What the test step averages, and what the test report writes per image (``js``, ``wasserstein`` columns)."""
    mos_std, levels, probs = mos_std.float(), levels.float(), probs.float()
    known = torch.isfinite(mos_std)
    raters = soft_labels(mos.float(), mos_std.nan_to_num(1.0), levels)
    unknown = torch.full_like(mos_std, float("nan"))
    return (torch.where(known, js_distance(probs, raters), unknown),
            torch.where(known, wasserstein(probs, raters, levels), unknown))

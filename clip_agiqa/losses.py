"""Losses that work within each dataset of a batch.

The MOS scales of different studies do not mean the same thing, but the order of two images rated in the same
study does. ``within_dataset_rank_loss`` compares only pairs from the same dataset (as UNIQUE and LIQE do): the
Thurstone probability that image i is better than image j, ``Phi((s_i - s_j) / sqrt(2))`` from the predicted
scores, against the raters' order (1 when i's MOS is higher, 0 when lower, 0.5 when equal), with the fidelity
loss ``1 - sqrt(p * q) - sqrt((1 - p) * (1 - q))``.
"""

from __future__ import annotations

import torch

FIDELITY_EPS = 1e-8  # keeps the square roots' gradients finite where a probability is exactly 0 or 1


def pair_probability(scores: torch.Tensor) -> torch.Tensor:
    """(n, n): the probability that sample i is better than sample j, from unit-variance Gaussian scores."""
    difference = scores[:, None] - scores[None, :]
    return 0.5 * (1 + torch.erf(difference / 2))  # Phi(d / sqrt(2)) = (1 + erf(d / 2)) / 2


def fidelity_loss(predicted: torch.Tensor, wanted: torch.Tensor) -> torch.Tensor:
    """Elementwise fidelity loss between two Bernoulli probabilities (0 when they agree)."""
    return 1 - torch.sqrt(predicted * wanted + FIDELITY_EPS) - torch.sqrt((1 - predicted) * (1 - wanted) + FIDELITY_EPS)


def within_dataset_rank_loss(scores: torch.Tensor, targets: torch.Tensor,
                             dataset: torch.Tensor | None = None) -> torch.Tensor:
    """The mean fidelity loss over the ordered pairs (i != j) of samples from the same dataset, summed over targets.

    Args:
        scores: (batch,) or (batch, targets) predictions.
        targets: the same shape: the MOS (any scale that keeps each dataset's order: the training scale).
        dataset: (batch,) each sample's dataset number; None: the whole batch is one dataset.

    A target with no pair in the batch (every sample of its own dataset, or NaN MOS) adds 0.
    """
    scores = scores.reshape(len(scores), -1).float()
    targets = targets.reshape(len(targets), -1).float()
    count = len(scores)
    same = torch.ones(count, count, dtype=torch.bool, device=scores.device)
    if dataset is not None:
        dataset = torch.as_tensor(dataset, device=scores.device).reshape(-1)
        same = dataset[:, None] == dataset[None, :]
    same &= ~torch.eye(count, dtype=torch.bool, device=scores.device)
    total = scores.new_zeros(())
    for column in range(scores.shape[1]):
        mos = targets[:, column]
        labelled = torch.isfinite(mos)
        pairs = same & labelled[:, None] & labelled[None, :]
        if not pairs.any():
            continue
        mos = torch.where(labelled, mos, torch.zeros_like(mos))
        wanted = 0.5 * (1 + torch.sign(mos[:, None] - mos[None, :]))  # 1, 0.5 or 0: the raters' order
        loss = fidelity_loss(pair_probability(scores[:, column]), wanted)
        total = total + loss[pairs].mean()
    return total


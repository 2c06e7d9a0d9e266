"""The ranking loss within each dataset of a batch (clip_agiqa.losses), against hand-computed values."""

import math

import pytest
import torch

from clip_agiqa.losses import FIDELITY_EPS, within_dataset_rank_loss


def hand_fidelity(p: float, q: float) -> float:
    return 1 - math.sqrt(p * q + FIDELITY_EPS) - math.sqrt((1 - p) * (1 - q) + FIDELITY_EPS)


def test_only_pairs_of_the_same_dataset_count():
    # Samples 0 and 1 (dataset 0): score difference 1, MOS 3 > 1. Sample 2 is alone in dataset 1: no pair.
    scores, mos, dataset = torch.tensor([1.0, 0.0, 2.0]), torch.tensor([3.0, 1.0, 1.0]), torch.tensor([0, 0, 1])
    p = 0.5 * (1 + math.erf(1 / 2))  # Phi(1 / sqrt(2)): sample 0 better than sample 1
    expected = (hand_fidelity(p, 1.0) + hand_fidelity(1 - p, 0.0)) / 2  # the pairs (0, 1) and (1, 0)
    assert within_dataset_rank_loss(scores, mos, dataset).item() == pytest.approx(expected, abs=1e-6)
    assert expected == pytest.approx(0.1280, abs=1e-4)  # 1 - sqrt(0.76025), less the two eps terms
    # Without dataset numbers the batch is one dataset: the pairs with sample 2 count too.
    pooled = within_dataset_rank_loss(scores, mos).item()
    assert pooled != pytest.approx(expected, abs=1e-3)


def test_equal_mos_wants_a_tie_and_the_right_order_costs_less():
    tie = within_dataset_rank_loss(torch.tensor([0.0, 0.0]), torch.tensor([2.0, 2.0]))
    assert tie.item() == pytest.approx(hand_fidelity(0.5, 0.5), abs=1e-6)  # about 0: p = q = 0.5
    right = within_dataset_rank_loss(torch.tensor([2.0, 0.0]), torch.tensor([3.0, 1.0]))
    wrong = within_dataset_rank_loss(torch.tensor([0.0, 2.0]), torch.tensor([3.0, 1.0]))
    assert right.item() < wrong.item()


def test_several_targets_add_up_and_lonely_samples_give_zero():
    scores = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    mos = torch.tensor([[3.0, 3.0], [1.0, 1.0]])
    p = 0.5 * (1 + math.erf(1 / 2))
    first = (hand_fidelity(p, 1.0) + hand_fidelity(1 - p, 0.0)) / 2
    second = (hand_fidelity(1 - p, 1.0) + hand_fidelity(p, 0.0)) / 2  # the wrong order
    assert within_dataset_rank_loss(scores, mos).item() == pytest.approx(first + second, abs=1e-6)
    assert within_dataset_rank_loss(scores, mos, torch.tensor([0, 1])).item() == 0.0


def test_the_loss_has_gradients_towards_the_raters_order():
    scores = torch.tensor([0.0, 0.0], requires_grad=True)
    within_dataset_rank_loss(scores, torch.tensor([3.0, 1.0])).backward()
    assert scores.grad[0] < 0 < scores.grad[1]  # raise the better one, lower the worse

"""Regression heads: image features + category prompt features -> one MOS per image. Batched, fp32."""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

HEADS = ("concat", "similarity")


def full_precision(forward):
    """Run a head in fp32 even inside a mixed-precision autocast region (as the paper does)."""

    @functools.wraps(forward)
    def wrapped(self, image_features: torch.Tensor, prompt_features: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=image_features.device.type, enabled=False):
            return forward(self, image_features.float(), prompt_features.float())

    return wrapped


class ConcatHead(nn.Module):
    """The paper's head: [normalised image, normalised prompts...] -> Dropout -> Linear -> ReLU -> Dropout -> Linear.

    The prompt features do not depend on the image, so here they act as a learned constant input.
    """

    def __init__(self, embed_dim: int, n_categories: int, hidden_dim: int = 512, dropout: float = 0.5):
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Dropout(dropout),
            nn.Linear(embed_dim * (1 + n_categories), hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, 1),
        )

    @full_precision
    def forward(self, image_features: torch.Tensor, prompt_features: torch.Tensor) -> torch.Tensor:
        image = F.normalize(image_features, dim=-1)
        prompts = F.normalize(prompt_features, dim=-1).flatten()
        joined = torch.cat([image, prompts.expand(image.shape[0], -1)], dim=1)
        return self.mlp(joined).squeeze(-1)


class SimilarityHead(nn.Module):
    """The image meets each category prompt: softmax over scaled cosine similarities gives a distribution
    over the ordered quality levels; its expected level, mapped onto ``mos_range``, is the score."""

    def __init__(self, n_categories: int, mos_range: tuple[float, float] = (0.0, 5.0), logit_scale: float = 100.0):
        super().__init__()
        low, high = mos_range
        if not high > low:
            raise ValueError(f"mos_range must be (low, high) with high > low, got {mos_range}")
        self.log_scale = nn.Parameter(torch.tensor(math.log(logit_scale)))
        self.register_buffer("levels", torch.linspace(low, high, n_categories), persistent=False)

    @full_precision
    def forward(self, image_features: torch.Tensor, prompt_features: torch.Tensor) -> torch.Tensor:
        image = F.normalize(image_features, dim=-1)
        prompts = F.normalize(prompt_features, dim=-1)
        probabilities = (self.log_scale.exp() * image @ prompts.T).softmax(dim=-1)
        return probabilities @ self.levels


def build_head(name: str, embed_dim: int, n_categories: int, hidden_dim: int, dropout: float,
               mos_range: tuple[float, float]) -> nn.Module:
    if name == "concat":
        return ConcatHead(embed_dim, n_categories, hidden_dim, dropout)
    if name == "similarity":
        return SimilarityHead(n_categories, mos_range)
    raise ValueError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}")

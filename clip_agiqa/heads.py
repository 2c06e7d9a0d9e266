"""Regression heads: image features + the learned quality prompts' features (+ the frozen text features of each
image's generation prompt) -> one score per target on the training scale (0-5). Batched, fp32.

Prompt-aware heads (``prompt_aware=True``) also read the frozen text features of each image's generation
prompt. The fusion is the one CLIPScore and its successors found to work with frozen CLIP features: the
cosine of image and prompt, their element-wise product (which of the prompt's directions the image shows),
and the prompt's features themselves (what was asked for), concatenated to the paper head's input.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import HEADS, TRAINING_SCALE
from .errors import InputError

# The last layer's weights are shrunk by this at the start of a fit: its first predictions stay near the mean.
START_WEIGHT_SCALE = 0.1


def full_precision(forward):
    """Run a head in fp32 even inside a mixed-precision autocast region (as the paper does)."""

    @functools.wraps(forward)
    def wrapped(self, image_features: torch.Tensor, quality_features: torch.Tensor,
                generation_features: torch.Tensor | None = None) -> torch.Tensor:
        with torch.autocast(device_type=image_features.device.type, enabled=False):
            text = generation_features.float() if generation_features is not None else None
            return forward(self, image_features.float(), quality_features.float(), text)

    return wrapped


def prompt_fusion(image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
    """[text, image * text, cosine(image, text)] of L2-normalised features: (batch, 2 dim + 1)."""
    product = image * text
    return torch.cat([text, product, product.sum(dim=-1, keepdim=True)], dim=-1)


class FeatureStandardiser(nn.Module):
    """Standardises features (zero mean, unit variance per feature) with statistics of the training data: the
    average of every training batch's mean and variance seen so far, updated by each training batch before it is
    standardised, and saved with the model (float buffers only: a saved model holds no integers). Training and
    scoring standardise alike: a batch's own statistics (as batch normalisation uses) would add noise from 32
    pictures' estimate of each of hundreds of variances, which cost a small head about 0.03 of test SRCC on the
    task suite's noise family. ``learn=False`` (a head that does not train, ``--model.trainable prompt``) keeps
    the statistics.

    ``whiten`` (a shrinkage, e.g. 0.1) also decorrelates the standardised features (ZCA whitening): they are
    multiplied by ``(R + whiten I)^-1/2``, R their correlation matrix (the average of the training batches' too).
    Frozen CLIP features are crowded into a few directions (with random ViT-B/16 weights three of 512 hold 98% of
    the variance), and a gradient step moves along a direction in proportion to its variance, so a head trained by
    gradient steps learns the quiet directions hardly at all; ridge regression, which solves for every direction,
    did, and whitening gives the head the same reach. The matrix is recomputed from the statistics at the first
    batches and then every ``REFRESH`` batches (an eigendecomposition), and kept with the model."""

    REFRESH = 64

    def __init__(self, size: int, eps: float = 1e-5, whiten: float | None = None):
        super().__init__()
        self.eps = eps
        self.whiten = whiten or None  # 0: standardise only
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("var", torch.ones(size))
        self.register_buffer("batches", torch.zeros(()))
        if self.whiten is not None:
            self.register_buffer("cov", torch.eye(size))
            self.register_buffer("whitening", torch.eye(size))
            self._seen: int | None = None  # ``batches`` on the host, read once (after each load): no sync a step
            self.register_load_state_dict_post_hook(_forget_seen)  # a function: the module still pickles

    def forward(self, features: torch.Tensor, learn: bool = True) -> torch.Tensor:
        if self.training and learn and len(features) > 1:
            self._learn(features)
        standardised = (features - self.mean) / (self.var + self.eps).sqrt()
        return standardised @ self.whitening if self.whiten is not None else standardised

    @torch.no_grad()
    def _learn(self, features: torch.Tensor) -> None:
        self.batches += 1  # the cumulative average: no host sync
        weight = 1.0 / self.batches
        self.mean.lerp_(features.mean(dim=0), weight)
        self.var.lerp_(features.var(dim=0, unbiased=False), weight)
        if self.whiten is None:
            return
        centred = features - features.mean(dim=0)
        self.cov.lerp_(centred.T @ centred / len(features), weight)
        self._seen = int(self.batches) if self._seen is None else self._seen + 1
        if self._seen % self.REFRESH == 0 or self._seen & (self._seen - 1) == 0:
            self.whitening.copy_(self._whitening_matrix())

    def _whitening_matrix(self) -> torch.Tensor:
        """``(R + whiten I)^-1/2`` of the correlation matrix R, in float64 on the CPU (every device has it)."""
        scale = (self.var + self.eps).rsqrt().double().cpu()
        correlation = self.cov.double().cpu() * scale[:, None] * scale[None, :]
        values, vectors = torch.linalg.eigh(correlation)
        inverse_root = (values.clamp_min(0) + self.whiten).rsqrt()
        return ((vectors * inverse_root) @ vectors.T).to(self.whitening)


def _forget_seen(module: FeatureStandardiser, incompatible_keys) -> None:
    module._seen = None  # loaded statistics: read their batch count again


def feature_standardiser(size: int, whiten: float | None = None) -> FeatureStandardiser:
    return FeatureStandardiser(size, whiten=whiten)


class ConcatHead(nn.Module):
    """The paper's head: [normalised image, normalised prompts...] -> Dropout -> Linear -> ReLU -> Dropout -> Linear
    (the first dropout is ``input_dropout`` where given). ``prompt_norm="l1"`` scales the block of normalised
    prompt features to unit L1 norm.

    The category prompt features do not depend on the image, so here they act as a learned constant input.
    Prompt-aware, the input also holds ``prompt_fusion(image, text)``. One output per target.
    """

    def __init__(self, embed_dim: int, n_categories: int, hidden_dim: int = 512, dropout: float = 0.5,
                 n_outputs: int = 1, prompt_aware: bool = False, levels: int | None = None,
                 training_scale: tuple[float, float] = TRAINING_SCALE, standardise: bool = False,
                 input_dropout: float | None = None, prompt_norm: str = "l2", whiten: float | None = None):
        super().__init__()
        self.prompt_aware = prompt_aware
        self.prompt_norm = prompt_norm
        if standardise:  # the image-dependent inputs to zero mean, unit variance: the training split's statistics
            self.image_norm = feature_standardiser(embed_dim, whiten)
            if prompt_aware:
                self.fusion_norm = feature_standardiser(2 * embed_dim + 1, whiten)
        self.n_outputs = n_outputs
        self.distribution = levels is not None  # K logits per target instead of one score
        if self.distribution:
            self.register_buffer("levels", torch.linspace(*training_scale, levels), persistent=False)
        inputs = embed_dim * (1 + n_categories) + ((2 * embed_dim + 1) if prompt_aware else 0)
        self.mlp = nn.Sequential(
            nn.Dropout(dropout if input_dropout is None else input_dropout),
            nn.Linear(inputs, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, n_outputs * (levels or 1)),
        )

    @torch.no_grad()
    def start_at(self, mean: torch.Tensor, std: torch.Tensor, weight_scale: float = START_WEIGHT_SCALE) -> None:
        """Start as (nearly) a mean predictor of the training data: the last layer's bias gives ``mean`` per target
        (training scale; a distribution head: the levels' Gaussian of ``mean`` and ``std``) and its weights are
        shrunk, so any checkpoint, even one of epoch 0, predicts on the MOS scale."""
        last = self.mlp[-1]
        last.weight.mul_(weight_scale)
        if self.distribution:
            from .calibration import soft_labels

            labels = soft_labels(mean.float()[None], std.float().clamp_min(0.1)[None], self.levels.float())[0]
            last.bias.copy_(labels.clamp_min(1e-6).log().flatten().to(last.bias))
        else:
            last.bias.copy_(mean.to(last.bias))

    def _outputs(self, image_features, quality_features, generation_features) -> torch.Tensor:
        image = F.normalize(image_features, dim=-1)
        prompts = F.normalize(quality_features, dim=-1).flatten()
        if self.prompt_norm == "l1":  # the whole block to unit L1 norm: see CLIPAGIQAConfig.prompt_norm
            prompts = prompts / prompts.abs().sum().clamp_min(1e-12)
        standardised = hasattr(self, "image_norm")
        learn = self.mlp[1].weight.requires_grad  # a frozen head keeps its statistics too
        parts = [self.image_norm(image, learn) if standardised else image, prompts.expand(image.shape[0], -1)]
        if self.prompt_aware:
            fusion = prompt_fusion(image, F.normalize(generation_features, dim=-1))
            parts.append(self.fusion_norm(fusion, learn) if standardised else fusion)
        return self.mlp(torch.cat(parts, dim=1))

    @full_precision
    def level_logits(self, image_features: torch.Tensor, quality_features: torch.Tensor,
                     generation_features: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, targets, levels) logits of the distribution over ``levels`` (a distribution head only)."""
        return self._outputs(image_features, quality_features, generation_features).unflatten(
            1, (self.n_outputs, len(self.levels)))

    @full_precision
    def forward(self, image_features: torch.Tensor, quality_features: torch.Tensor,
                generation_features: torch.Tensor | None = None) -> torch.Tensor:
        if self.distribution:
            logits = self._outputs(image_features, quality_features, generation_features)
            return logits.unflatten(1, (self.n_outputs, len(self.levels))).softmax(dim=-1) @ self.levels
        return self._outputs(image_features, quality_features, generation_features)


class SimilarityHead(nn.Module):
    """The image meets each category prompt: softmax over scaled cosine similarities gives a distribution
    over the ordered quality levels; its expected level, on ``training_scale``, is the score.

    Each target has its own logit scale and a learned offset per level (zero at the start, so one target is
    exactly the single-target head). Prompt-aware, the cosine between image and generation prompt moves each
    level's logit by a learned slope per target and level (zero at the start)."""

    distribution = True

    def __init__(self, n_categories: int, training_scale: tuple[float, float] = TRAINING_SCALE,
                 logit_scale: float = 100.0, n_outputs: int = 1, prompt_aware: bool = False):
        super().__init__()
        low, high = training_scale
        if not high > low:
            raise ValueError(f"training_scale must be (low, high) with high > low, got {training_scale}")
        self.prompt_aware = prompt_aware
        self.log_scale = nn.Parameter(torch.full((n_outputs,), math.log(logit_scale)))
        if n_outputs > 1:
            self.level_offset = nn.Parameter(torch.zeros(n_outputs, n_categories))
        if prompt_aware:
            self.alignment_slope = nn.Parameter(torch.zeros(n_outputs, n_categories))
        self.register_buffer("levels", torch.linspace(low, high, n_categories), persistent=False)

    @full_precision
    def level_logits(self, image_features: torch.Tensor, quality_features: torch.Tensor,
                     generation_features: torch.Tensor | None = None) -> torch.Tensor:
        """(batch, targets, levels) logits of the distribution over the ordered ``levels``."""
        image = F.normalize(image_features, dim=-1)
        prompts = F.normalize(quality_features, dim=-1)
        logits = self.log_scale.exp()[None, :, None] * (image @ prompts.T)[:, None, :]  # (batch, outputs, levels)
        if hasattr(self, "level_offset"):
            logits = logits + self.level_offset
        if self.prompt_aware:
            alignment = (image * F.normalize(generation_features, dim=-1)).sum(dim=-1)
            logits = logits + alignment[:, None, None] * self.alignment_slope
        return logits

    @full_precision
    def forward(self, image_features: torch.Tensor, quality_features: torch.Tensor,
                generation_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.level_logits(image_features, quality_features, generation_features).softmax(dim=-1) @ self.levels


def build_head(name: str, embed_dim: int, n_categories: int, hidden_dim: int, dropout: float,
               training_scale: tuple[float, float] = TRAINING_SCALE, n_outputs: int = 1,
               prompt_aware: bool = False, levels: int | None = None, standardise: bool = False,
               input_dropout: float | None = None, prompt_norm: str = "l2", whiten: float | None = None) -> nn.Module:
    """``levels``: a distribution over that many levels per target (the concat head; the similarity head's levels
    are its categories). ``input_dropout``: the concat head's input dropout (None: ``dropout``). ``whiten``: the
    standardised inputs' whitening shrinkage (``FeatureStandardiser``)."""
    if name == "concat":
        return ConcatHead(embed_dim, n_categories, hidden_dim, dropout, n_outputs, prompt_aware, levels,
                          training_scale, standardise, input_dropout, prompt_norm, whiten)
    if name == "similarity":
        return SimilarityHead(n_categories, training_scale, n_outputs=n_outputs, prompt_aware=prompt_aware)
    raise InputError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}")

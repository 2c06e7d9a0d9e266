"""Prompts cut after the last EOS give the same features and gradients as the full 77-token prompts.

Attention is causal, so tokens after EOS never reach the EOS state: the two paths are the same
computation. Only the floating-point blocking of matrix products differs with the sequence length,
so equality is checked in float64 (agreement to ~1e-12; a leak through attention would show ~1e-2).
Eager attention takes its softmax in float32 even for float64 inputs, which bounds it to
float32 rounding (~1e-7 on features, ~1e-5 on gradients).
"""

from __future__ import annotations

import pytest
import torch

from clip_agiqa.backbone import load_backbone
from clip_agiqa.prompts import DEFAULT_CATEGORIES, PromptLearner

MAX_LENGTH = 77
TOLERANCE = {"sdpa": dict(rtol=0, atol=1e-12), "eager": dict(rtol=1e-4, atol=1e-5)}  # see the module docstring


def learner_pair(backbone, **kwargs) -> tuple[PromptLearner, PromptLearner]:
    pair = []
    for cut in (True, False):
        torch.manual_seed(0)  # the same random context in both
        pair.append(PromptLearner(backbone.clip, backbone.tokenizer, DEFAULT_CATEGORIES, cut_after_eos=cut,
                                  **kwargs).double())
    return pair[0], pair[1]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize("options", [dict(n_ctx=16), dict(n_ctx=4, class_specific_ctx=True),
                                     dict(ctx_init="a photo of")], ids=["shared", "class_specific", "ctx_init"])
def test_cut_prompts_give_the_same_features_and_gradients(attn_implementation, options):
    backbone = load_backbone("random:tiny", attn_implementation)
    backbone.clip.requires_grad_(False)
    backbone.clip.double()
    cut, full = learner_pair(backbone, **options)
    assert cut.prompt_embeddings().shape[1] == int(cut.eos_index.max()) + 1 < MAX_LENGTH
    assert full.prompt_embeddings().shape[1] == MAX_LENGTH
    assert torch.equal(cut.eos_index, full.eos_index)

    cut_features, full_features = cut(backbone.clip), full(backbone.clip)
    tolerance = TOLERANCE[attn_implementation]
    torch.testing.assert_close(cut_features, full_features, **tolerance)
    weights = torch.randn_like(cut_features)
    (cut_features * weights).sum().backward()
    (full_features * weights).sum().backward()
    torch.testing.assert_close(cut.ctx.grad, full.ctx.grad, **tolerance)


def test_the_model_uses_cut_prompts_by_default(tiny_model):
    learner = tiny_model.model.prompt_learner
    assert learner.prompt_embeddings().shape[1] == int(learner.eos_index.max()) + 1 < MAX_LENGTH

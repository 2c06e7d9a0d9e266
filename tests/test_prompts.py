"""The injected-context text path equals CLIP's own text features for a plain prompt."""

import pytest
import torch

from clip_agiqa.backbone import feature_output, load_backbone
from clip_agiqa.prompts import DEFAULT_CATEGORIES, PromptLearner, encode_text_embeddings, tokenize_prompts


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
def test_ctx_init_prompt_features_equal_get_text_features(attn_implementation):
    backbone = load_backbone("random:tiny", attn_implementation)
    learner = PromptLearner(backbone.clip, backbone.tokenizer, DEFAULT_CATEGORIES, ctx_init="a photo of")
    plain = [f"a photo of {category}." for category in DEFAULT_CATEGORIES]
    assert learner.prompts == plain
    ids = backbone.tokenizer(plain, padding=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = feature_output(backbone.clip.get_text_features(input_ids=ids))
        actual = learner(backbone.clip)
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-6)


def test_forgetting_causal_attention_would_change_the_features():
    """Guards the test above: a non-causal encoder gives different features, so equality means something."""
    backbone = load_backbone("random:tiny")
    ids, eos = tokenize_prompts(backbone.tokenizer, ["a photo of good."], 77, cut_after_eos=False)
    text = backbone.clip.text_model
    with torch.no_grad():
        causal = encode_text_embeddings(backbone.clip, text.embeddings.token_embedding(ids), eos)
        hidden = text.embeddings(inputs_embeds=text.embeddings.token_embedding(ids))
        hidden = text.encoder(inputs_embeds=hidden, attention_mask=None, is_causal=False).last_hidden_state
        pooled = text.final_layer_norm(hidden)[0, eos]
        bidirectional = backbone.clip.text_projection(pooled)
    assert not torch.allclose(causal, bidirectional, atol=1e-4)


def test_context_shapes_and_gradients():
    backbone = load_backbone("random:tiny")
    shared = PromptLearner(backbone.clip, backbone.tokenizer, DEFAULT_CATEGORIES, n_ctx=5)
    specific = PromptLearner(backbone.clip, backbone.tokenizer, DEFAULT_CATEGORIES, n_ctx=5, class_specific_ctx=True)
    assert shared.ctx.shape == (5, 32) and specific.ctx.shape == (6, 5, 32)
    backbone.clip.requires_grad_(False)
    features = specific(backbone.clip)
    assert features.shape == (6, backbone.clip.config.projection_dim)
    features.sum().backward()
    assert specific.ctx.grad is not None and specific.ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.clip.parameters())


def test_ctx_init_sets_the_number_of_context_vectors():
    backbone = load_backbone("random:tiny")
    learner = PromptLearner(backbone.clip, backbone.tokenizer, ["bad", "good"], n_ctx=16, ctx_init="a photo of")
    assert learner.n_ctx == 3 and learner.ctx.shape[0] == 3

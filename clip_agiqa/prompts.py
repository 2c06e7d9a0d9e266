"""CoOp-style prompt learner: learned context vectors injected into CLIP's frozen text encoder.

Prompt: ``[SOS] ctx_1 ... ctx_n <category>. [EOS]``. ``CLIPTextModel`` takes no ``inputs_embeds``, so the
text path is rebuilt from its parts (token embeddings -> positions -> causal encoder -> final norm ->
EOS state -> projection); ``encode_text_embeddings`` of plain token embeddings equals
``get_text_features`` exactly.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence

import torch
from torch import nn
from transformers import CLIPModel, CLIPTokenizer
from transformers.masking_utils import create_causal_mask

from .config import DEFAULT_CATEGORIES
from .errors import InputError

CTX_PLACEHOLDER = "X"


_MASK_PARAMETERS = inspect.signature(create_causal_mask).parameters


def causal_mask(config, hidden: torch.Tensor):
    """``create_causal_mask`` across transformers 5.x: the cache argument was renamed (past_key_values -> cache)."""
    cache_argument = "cache" if "cache" in _MASK_PARAMETERS else "past_key_values"
    return create_causal_mask(config=config, inputs_embeds=hidden, attention_mask=None, **{cache_argument: None})


def encode_text_embeddings(clip: CLIPModel, token_embeds: torch.Tensor, eos_index: torch.Tensor) -> torch.Tensor:
    """Projected text features of prompts given as token embeddings (n_prompts, seq_len, width)."""
    text_model = clip.text_model
    hidden = text_model.embeddings(inputs_embeds=token_embeds)
    mask = causal_mask(text_model.config, hidden)
    # With sdpa the mask comes back None: is_causal=True is what keeps attention causal.
    hidden = text_model.encoder(inputs_embeds=hidden, attention_mask=mask, is_causal=True).last_hidden_state
    hidden = text_model.final_layer_norm(hidden)
    pooled = hidden[torch.arange(hidden.shape[0], device=hidden.device), eos_index]
    return clip.text_projection(pooled)


def tokenize_prompts(tokenizer: CLIPTokenizer, prompts: list[str], max_length: int,
                     cut_after_eos: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids padded to a common length and each prompt's EOS position.

    Attention is causal, so tokens after the last EOS never reach an EOS state: cutting there gives
    identical features for a fraction of the sequence length.
    """
    lengths = [len(row) for row in tokenizer(prompts, verbose=False)["input_ids"]]  # not truncated
    if max(lengths) > max_length:
        raise InputError(f"the quality prompt {prompts[lengths.index(max(lengths))][-80:]!r} is {max(lengths)} "
                         f"tokens; the text encoder takes at most {max_length}")
    ids = tokenizer(prompts, padding="max_length", max_length=max_length, truncation=True,
                    return_tensors="pt")["input_ids"]
    eos_index = (ids == tokenizer.eos_token_id).int().argmax(dim=1)
    if cut_after_eos:
        ids = ids[:, : int(eos_index.max()) + 1]
    return ids, eos_index


def check_window(tokenizer: CLIPTokenizer, prompts: list[str], n_ctx: int, ctx_init: str | None,
                 max_length: int) -> None:
    """The context and the longest quality prompt must fit the text encoder's window (the tokenizer would cut the
    quality word off, or the encoder fail at the first forward)."""
    lengths = [len(row) for row in tokenizer(prompts, verbose=False)["input_ids"]]
    longest = max(lengths)
    if longest <= max_length:
        return
    words = longest - n_ctx  # start, end, the category and its full stop
    context = f"ctx_init {ctx_init[:60]!r} ({n_ctx} tokens)" if ctx_init else f"n_ctx {n_ctx}"
    raise InputError(f"{context} and the longest quality prompt need {longest} tokens, but the text encoder takes "
                     f"at most {max_length}: use at most {max_length - words} context tokens with these categories")


class PromptLearner(nn.Module):
    """Owns the learned context and the frozen token pieces around it; produces one feature per category."""

    def __init__(self, clip: CLIPModel, tokenizer: CLIPTokenizer, categories: Sequence[str] = DEFAULT_CATEGORIES,
                 n_ctx: int = 16, ctx_init: str | None = None, class_specific_ctx: bool = False,
                 cut_after_eos: bool = True):
        super().__init__()
        if not categories:
            raise InputError("categories must name at least one quality level")
        token_embedding = clip.text_model.embeddings.token_embedding
        device = token_embedding.weight.device  # the backbone may already sit on a GPU
        width = token_embedding.embedding_dim
        max_length = clip.text_model.config.max_position_embeddings
        n_categories = len(categories)

        if ctx_init:
            init_ids = tokenizer(ctx_init, add_special_tokens=False)["input_ids"]
            n_ctx = len(init_ids)
            with torch.no_grad():
                ctx = token_embedding(torch.tensor(init_ids, device=device)).float().clone()
            if class_specific_ctx:
                ctx = ctx.unsqueeze(0).repeat(n_categories, 1, 1)
            context_text = ctx_init
        else:
            if n_ctx < 1:
                raise InputError(f"n_ctx must be at least 1, got {n_ctx}")
            shape = (n_categories, n_ctx, width) if class_specific_ctx else (n_ctx, width)
            ctx = torch.empty(shape, device=device).normal_(std=0.02)
            context_text = " ".join([CTX_PLACEHOLDER] * n_ctx)
        self.ctx = nn.Parameter(ctx)
        self.n_ctx = n_ctx
        self.categories = list(categories)
        self.prompts = [f"{context_text} {category}." for category in categories]

        check_window(tokenizer, self.prompts, n_ctx, ctx_init, max_length)
        ids, eos_index = tokenize_prompts(tokenizer, self.prompts, max_length, cut_after_eos)
        ids, eos_index = ids.to(device), eos_index.to(device)
        if ctx_init:
            context_ids = ids[:, 1: 1 + n_ctx]
            if not (context_ids == torch.tensor(init_ids, device=device)).all():
                raise InputError(f"ctx_init {ctx_init!r} does not tokenize the same inside the prompts")
        with torch.no_grad():
            embeds = token_embedding(ids).float()
        # Derived from the frozen backbone, so not saved in checkpoints.
        self.register_buffer("token_prefix", embeds[:, :1].clone(), persistent=False)
        self.register_buffer("token_suffix", embeds[:, 1 + n_ctx:].clone(), persistent=False)
        self.register_buffer("eos_index", eos_index, persistent=False)

    def prompt_embeddings(self) -> torch.Tensor:
        ctx = self.ctx
        if ctx.dim() == 2:
            ctx = ctx.unsqueeze(0).expand(len(self.categories), -1, -1)
        return torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)

    def forward(self, clip: CLIPModel) -> torch.Tensor:
        """Projected features of every category prompt, (n_categories, projection_dim)."""
        dtype = clip.text_model.embeddings.token_embedding.weight.dtype
        return encode_text_embeddings(clip, self.prompt_embeddings().to(dtype), self.eos_index)
